/** Why a container operation was refused; `code` reaches `--json` output as error.code. */
export type ContainerErrorCode = 'UNKNOWN_CONTAINER' | 'NAME_TAKEN' | 'BUSY' | 'STOP_FAILED' | 'NO_BRIDGE' | 'ADDRESS_IN_USE';

export class ContainerError extends Error {
  constructor(
    readonly code: ContainerErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ContainerError';
  }
}
