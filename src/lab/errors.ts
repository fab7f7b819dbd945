/** Why a lab operation failed or was refused; `code` reaches `--json` output as error.code. */
export type LabErrorCode = 'LAB_EXISTS' | 'NO_LAB' | 'UNKNOWN_HOST' | 'HOST_DOWN' | 'BAD_RECORD' | 'AGENT_FAILED';

export class LabError extends Error {
  constructor(
    readonly code: LabErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'LabError';
  }
}
