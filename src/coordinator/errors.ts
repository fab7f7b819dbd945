/** A migration that cannot start or had to stop, with a code the CLI and the peers can act on. */
export class MigrationError extends Error {
  constructor(
    readonly code: 'NO_CONTAINER' | 'BUSY' | 'SAME_HOST' | 'CANCELLED' | 'CHECK_FAILED' | 'UNKNOWN_MIGRATION' | 'TOO_LATE' | 'FAILED',
    message: string,
    readonly problems: string[] = [],
  ) {
    super(message);
    this.name = 'MigrationError';
  }
}
