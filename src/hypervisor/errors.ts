/**
 * Typed errors of the hypervisor layer. Every message names the instance or
 * device concerned and, where there is one, what the operator can do about it.
 * `code` is stable and meant for callers (the node daemon maps it to gRPC
 * status codes); messages are for people.
 */
export type HypervisorErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'INTERNAL';

export class HypervisorError extends Error {
  readonly code: HypervisorErrorCode;
  constructor(code: HypervisorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Input that cannot be right whatever the state: bad MAC, bad id, bad path. */
export class InvalidArgumentError extends HypervisorError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

export class DeviceNotFoundError extends HypervisorError {
  constructor(instance: string, what: string) {
    super('NOT_FOUND', `instance ${instance} has no ${what} in its runtime file`);
  }
}

export class DeviceExistsError extends HypervisorError {
  constructor(instance: string, what: string) {
    super('ALREADY_EXISTS', `instance ${instance} already has ${what}`);
  }
}

export class NoFreePciSlotError extends HypervisorError {
  constructor(instance: string, used: number, total: number, detail = '') {
    super(
      'RESOURCE_EXHAUSTED',
      `no free PCI slot on instance ${instance} (${used} of ${total} used${detail ? `: ${detail}` : ''}); remove a device first`,
    );
  }
}

export class PciSlotTakenError extends HypervisorError {
  constructor(instance: string, slot: number, holder: string) {
    super('FAILED_PRECONDITION', `PCI slot ${slot} of instance ${instance} is taken by ${holder}`);
  }
}

/** The monitor socket cannot be reached: QEMU is not running or gone. */
export class QmpUnavailableError extends HypervisorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UNAVAILABLE', message, options);
  }
}

export class QmpTimeoutError extends HypervisorError {
  constructor(command: string, socketPath: string, ms: number) {
    super('DEADLINE_EXCEEDED', `QMP command ${command} on ${socketPath} got no answer within ${ms} ms`);
  }
}

/** QEMU answered a command with an error object. */
export class QmpCommandError extends HypervisorError {
  readonly qmpClass: string;
  readonly command: string;
  constructor(command: string, qmpClass: string, desc: string) {
    super('FAILED_PRECONDITION', `QEMU refused ${command}: ${desc} (${qmpClass})`);
    this.qmpClass = qmpClass;
    this.command = command;
  }
}

/**
 * One step of a hotplug failed. `step` names it (e.g. "device_add"); `undone`
 * lists the earlier steps that were rolled back, `undoFailures` any rollback
 * that itself failed (those need an operator or the next reconcile).
 */
export class HotplugStepError extends HypervisorError {
  readonly step: string;
  readonly undone: string[];
  readonly undoFailures: string[];
  /** The step may have taken effect in QEMU: nothing was undone, reconcile settles it. */
  readonly outcomeUnknown: boolean;
  constructor(
    action: string,
    step: string,
    cause: unknown,
    undone: string[],
    undoFailures: string[],
    outcomeUnknown = false,
  ) {
    const why = cause instanceof Error ? cause.message : String(cause);
    const rolled = undone.length ? `; rolled back: ${undone.join(', ')}` : '';
    const left = undoFailures.length ? `; rollback FAILED for: ${undoFailures.join('; ')}` : '';
    const unknown = outcomeUnknown ? '; its outcome is unknown (QEMU may have executed it): nothing was undone, reconciliation settles it against QEMU\'s lists' : '';
    const code = cause instanceof HypervisorError ? cause.code : 'INTERNAL';
    super(code, `${action} failed at step ${step}: ${why}${rolled}${left}${unknown}`, { cause });
    this.step = step;
    this.undone = undone;
    this.undoFailures = undoFailures;
    this.outcomeUnknown = outcomeUnknown;
  }
}

export class RuntimeFileError extends HypervisorError {
  constructor(path: string, why: string) {
    super('FAILED_PRECONDITION', `runtime file ${path}: ${why}`);
  }
}

export class InstanceStateError extends HypervisorError {
  constructor(message: string) {
    super('FAILED_PRECONDITION', message);
  }
}

/**
 * Whether a failure leaves it unknown if QEMU executed the command: it timed
 * out, or the monitor connection went away while it was sent or answered.
 */
export function isOutcomeUnknown(err: unknown): boolean {
  if (err instanceof HotplugStepError) return err.outcomeUnknown || isOutcomeUnknown(err.cause);
  return err instanceof QmpTimeoutError || err instanceof QmpUnavailableError;
}

/** An operation whose effect is not known yet: its intent is kept and reconciliation settles it. */
export class OutcomeUnknownError extends HypervisorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UNAVAILABLE', message, options);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
