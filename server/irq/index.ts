/** Interrupt delivery through the client's eventfds. */
export { Interrupts, type IrqCounts, type IrqIndexState, type IrqMode, type IrqState } from './interrupts.js';
