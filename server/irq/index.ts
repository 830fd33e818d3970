/** Interrupt delivery through the client's eventfds. */
export { Interrupts, type IrqCounts, type IrqMode } from './interrupts.js';
