/**
 * The metrics every served device gets (DeviceServer with `metrics`): what
 * its connections carry (through the connection observer), and, for a
 * PciDevice, its interrupts and DMA traffic (read from the device's own
 * counters when Prometheus scrapes).
 *
 *   vfio_user_messages_total{device,command}        requests from the client, VERSION included
 *   vfio_user_message_errors_total{device,errno}    requests answered with an error
 *   vfio_user_dma_requests_total{device,command,result}  our DMA_READ/DMA_WRITE messages (ok or the errno)
 *   vfio_user_dma_bytes_total{device,path,op}       path mapped (op read|write|pin) or messages (op read|write)
 *   vfio_user_dma_maps{device}                      DMA ranges the client mapped
 *   vfio_user_interrupts_total{device,index}        eventfd signals, index intx|msi|msix|err|req
 *   vfio_user_connection_state{device,state}        1 for the current state: idle, version, ready, closing
 *   vfio_user_connections_total{device}             clients served
 *   vfio_user_connections_rejected_total{device}    clients turned away (another one was attached)
 */
import { constants } from 'node:os';
import { commandName, PciIrq, VfioUserCommand } from '../../protocol/constants.js';
import type {
  ConnectionObserver,
  ConnectionState,
  ConnectionStateEvent,
  DmaRequestEvent,
  MessageEvent,
} from '../connection/observer.js';
import type { Endpoint } from '../endpoint.js';
import { PciDevice } from '../pci/device.js';
import type { CounterChild, GaugeChild } from './device-metrics.js';
import type { CounterCell } from './families.js';
import type { MetricsRegistry } from './registry.js';

/** Command numbers past this are counted as one "UNKNOWN" (a client picks them: bounded label values). */
const KNOWN_COMMANDS = 32;
/** errno values past this are counted as one "EUNKNOWN". */
const MAX_ERRNO = 4096;

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value, name]));

function errnoLabel(errno: number): string {
  return errno > 0 && errno <= MAX_ERRNO ? (errnoNames.get(errno) ?? `E${errno}`) : 'EUNKNOWN';
}

const STATES = ['idle', 'version', 'ready', 'closing'] as const;
const IRQ_INDEXES = [
  [PciIrq.INTX, 'intx'],
  [PciIrq.MSI, 'msi'],
  [PciIrq.MSIX, 'msix'],
  [PciIrq.ERR, 'err'],
  [PciIrq.REQ, 'req'],
] as const;

/** Metrics of one served endpoint; `observer` goes to its connections. */
export class EndpointMetrics {
  readonly observer: ConnectionObserver;
  readonly #messagesByCommand: CounterChild[] = [];
  readonly #errorsByErrno = new Map<number, CounterChild>();
  readonly #dmaRequests = new Map<string, CounterChild>();
  readonly #state: Record<(typeof STATES)[number], GaugeChild>;
  readonly #connections: CounterChild;
  readonly #rejected: CounterChild;
  readonly #label: (values: readonly string[], family: string) => CounterChild;

  constructor(registry: MetricsRegistry, endpoint: Endpoint) {
    const device = endpoint.name;
    const counter = (name: string, help: string, labels: readonly string[]) =>
      registry.family(name, 'counter', help, labels);
    const messages = counter('vfio_user_messages_total', 'vfio-user requests from the client, by command', ['command']);
    const errors = counter('vfio_user_message_errors_total', 'vfio-user requests answered with an error, by errno', [
      'errno',
    ]);
    const dma = counter(
      'vfio_user_dma_requests_total',
      'DMA_READ/DMA_WRITE messages the device sent the client, by result',
      ['command', 'result'],
    );
    this.#label = (values, family) =>
      (family === 'messages' ? messages : family === 'errors' ? errors : dma).cell([device, ...values]);
    const state = registry.family(
      'vfio_user_connection_state',
      'gauge',
      "1 for the state of the device's client connection",
      ['state'],
    );
    this.#state = {
      idle: state.cell([device, 'idle']),
      version: state.cell([device, 'version']),
      ready: state.cell([device, 'ready']),
      closing: state.cell([device, 'closing']),
    };
    this.#state.idle.set(1);
    this.#connections = counter('vfio_user_connections_total', 'Clients the device served', []).cell([device]);
    this.#rejected = counter(
      'vfio_user_connections_rejected_total',
      'Clients turned away while another one was attached',
      [],
    ).cell([device]);
    if (endpoint instanceof PciDevice) this.#pciCounters(registry, endpoint);
    this.observer = {
      message: (e) => this.#message(e),
      dmaRequest: (e) => this.#dmaRequest(e),
      state: (e) => this.#stateChange(e),
    };
  }

  /** A client was turned away (DeviceServer). */
  rejected(): void {
    this.#rejected.inc();
  }

  #message(e: MessageEvent): void {
    const slot = e.command < KNOWN_COMMANDS ? e.command : KNOWN_COMMANDS;
    let c = this.#messagesByCommand[slot];
    if (c === undefined) {
      c = this.#label([slot === KNOWN_COMMANDS ? 'UNKNOWN' : commandName(slot)], 'messages');
      this.#messagesByCommand[slot] = c;
    }
    c.inc();
    if (e.errno !== 0) {
      const key = e.errno > 0 && e.errno <= MAX_ERRNO ? e.errno : -1;
      let err = this.#errorsByErrno.get(key);
      if (err === undefined) {
        err = this.#label([errnoLabel(e.errno)], 'errors');
        this.#errorsByErrno.set(key, err);
      }
      err.inc();
    }
  }

  #dmaRequest(e: DmaRequestEvent): void {
    const cmd = e.command === VfioUserCommand.DMA_READ ? 'DMA_READ' : 'DMA_WRITE';
    const result = e.errno === 0 ? 'ok' : errnoLabel(e.errno);
    const key = `${cmd} ${result}`;
    let c = this.#dmaRequests.get(key);
    if (c === undefined) {
      c = this.#label([cmd, result], 'dma');
      this.#dmaRequests.set(key, c);
    }
    c.inc();
  }

  #stateChange(e: ConnectionStateEvent): void {
    const now: (typeof STATES)[number] = stateLabel(e.state);
    for (const s of STATES) this.#state[s].set(s === now ? 1 : 0);
    if (e.state === 'version') this.#connections.inc();
  }

  /** Interrupts and DMA bytes of a PciDevice: its own counters, copied in at every scrape. */
  #pciCounters(registry: MetricsRegistry, dev: PciDevice): void {
    const device = dev.name;
    const irqs = registry.family(
      'vfio_user_interrupts_total',
      'counter',
      'Interrupts signalled to the client, by IRQ index',
      ['index'],
    );
    const irqCells = IRQ_INDEXES.map(([index, label]) => [index, irqs.cell([device, label])] as const);
    const bytes = registry.family(
      'vfio_user_dma_bytes_total',
      'counter',
      'Guest memory the device read or wrote, by path',
      ['path', 'op'],
    );
    const cell = (path: string, op: string): CounterCell => bytes.cell([device, path, op]);
    const mappedRead = cell('mapped', 'read');
    const mappedWrite = cell('mapped', 'write');
    const pinned = cell('mapped', 'pin');
    const messageRead = cell('messages', 'read');
    const messageWrite = cell('messages', 'write');
    const maps = registry.family('vfio_user_dma_maps', 'gauge', 'DMA ranges the client has mapped', []).cell([device]);
    registry.device(device).onCollect(() => {
      for (const [index, c] of irqCells) c.value = dev.irq.signalCount(index);
      const s = dev.dma.stats;
      mappedRead.value = s.mappedRead;
      mappedWrite.value = s.mappedWrite;
      pinned.value = s.pinned;
      messageRead.value = s.messageRead;
      messageWrite.value = s.messageWrite;
      maps.set(dev.dma.regions.length);
    });
  }
}

function stateLabel(state: ConnectionState): (typeof STATES)[number] {
  switch (state) {
    case 'version':
      return 'version';
    case 'ready':
      return 'ready';
    case 'closing':
      return 'closing';
    case 'closed':
      return 'idle';
  }
}
