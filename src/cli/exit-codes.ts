/** Exit codes of `migrate`; scripts depend on them, so they only ever grow. */
export const ExitCode = {
  Ok: 0,
  Failed: 1,
  Usage: 2,
  Unsupported: 3,
  Refused: 4,
  RolledBack: 5,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The meaning of each exit code, as shown in `migrate --help` and the README. */
export const EXIT_CODE_MEANINGS: ReadonlyArray<readonly [ExitCode, string]> = [
  [ExitCode.Ok, 'ok'],
  [ExitCode.Failed, 'the operation failed (the error says why)'],
  [ExitCode.Usage, 'usage error'],
  [ExitCode.Unsupported, 'environment not supported, or Ferry not built'],
  [ExitCode.Refused, 'refused: state Ferry cannot migrate'],
  [ExitCode.RolledBack, 'the migration failed and was rolled back: the workload runs on where it was'],
];
