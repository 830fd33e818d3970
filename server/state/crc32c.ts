/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), the checksum that
 * closes a saved state (server/state/envelope.ts). It catches a truncated or
 * corrupted stream before any byte of it is believed; it is not a defence
 * against someone who forges a stream (the decoder's bounds checks are).
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `bytes` ("123456789" gives 0xe3069283). */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
