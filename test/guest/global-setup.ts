// Placeholder: replaced by the guest kit (issue 4).
export default async function setup(): Promise<void> {}
