// A refusal that names what was wrong: the field (a path such as
// devices.2.path or header.vm.name) and, for input read from a file, the
// file. Every error of ours that names a field is one, so the toolstack and
// the API map them the same way (VmCreateError.from, serializeError) without
// knowing each class.
export class FieldError extends Error {
  /** What is wrong with the field, without the words that name it. */
  readonly reason: string;
  readonly file?: string;

  /** The message is "[file: ]field: reason" unless given. */
  constructor(readonly field: string, reason: string, options: { file?: string; message?: string } = {}) {
    super(options.message ?? `${options.file !== undefined ? `${options.file}: ` : ''}${field}: ${reason}`);
    this.name = 'FieldError';
    this.reason = reason;
    if (options.file !== undefined) this.file = options.file;
  }
}
