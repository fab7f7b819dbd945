/**
 * The agent: `migrate agent` on every host. It runs the host's containers,
 * plays source or target in migrations, and answers the CLI. Everything it
 * must not forget lives in its state directory (containers: src/container,
 * migrations: the journal), so it can die and start again at any moment:
 * containers keep running without it, and unfinished migrations are
 * resolved when it is back (coordinator/recovery.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tracer } from '../native/tracer.js';
import { isZombie, processExists, readStat } from '../native/proc.js';
import { waitpid, WAIT } from '../native/wait.js';
import { CONTAINER_TRACER_MODULE, listContainers, runContainer, stopContainer } from '../container/runtime.js';
import { listStates, stateDir } from '../container/state.js';
import { connect, listen, type Channel, type ClientTlsOptions, type ServerTlsOptions } from '../transport/index.js';
import { Journal } from '../coordinator/journal.js';
import { MigrationError } from '../coordinator/errors.js';
import {
  CancelReply,
  CancelRequest,
  DiscardRequest,
  Finished,
  IMAGE_STREAMS,
  ImageComplete,
  ImageStreamMeta,
  MigrateRequest,
  MigrationStarted,
  Ok,
  OutcomeReply,
  OutcomeRequest,
  PrepareRequest,
  Progress,
  PsReply,
  PsRequest,
  RestoreReply,
  RestoreRequest,
  ResumeRequest,
  RunReply,
  RunRequest,
  StatusReply,
  StatusRequest,
  StopReply,
  StopRequest,
} from '../coordinator/messages.js';
import { askSourceUntilResolved, recoverMigrations } from '../coordinator/recovery.js';
import { SourceMigration, type SourceAgent } from '../coordinator/source.js';
import { TargetSide } from '../coordinator/target.js';
import type { Manifest } from '../image/format.js';

const ENGINE_MODULES = [
  new URL('../source/checkpoint.js', import.meta.url),
  new URL('../target/restore.js', import.meta.url),
  new URL('../precopy/session.js', import.meta.url),
  CONTAINER_TRACER_MODULE,
];

export interface AgentConfig {
  /** This host's name in the inventory. */
  name: string;
  host: string;
  port: number;
  token: string;
  /** The agent's certificate (and whether peers must show theirs), and how it checks the agents it calls. */
  tls?: { server: ServerTlsOptions; client: ClientTlsOptions };
  /** Memory the host keeps for itself; a migration that would leave less is refused. */
  memoryReserveBytes: number;
  /** Where incoming images wait to be restored: a tmpfs, so they never touch a disk. */
  stagingDir: string;
  log(line: string): void;
}

export interface RunningAgent {
  address: string;
  close(): Promise<void>;
}

/** Containers whose init is our child: ours to reap when they end, or they stay zombies. */
const REAP_INTERVAL_MS = 1_000;

export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const tracer = await Tracer.start(ENGINE_MODULES);
  const journal = new Journal(path.join(stateDir(), 'migrations'));
  fs.mkdirSync(config.stagingDir, { recursive: true });
  const address = `${config.host}:${config.port}`;
  const self: SourceAgent = {
    name: config.name,
    address,
    journal,
    tracer,
    connect: (to) => connect(to, { token: config.token, role: 'agent', hostName: config.name, ...(config.tls ? { tls: config.tls.client } : {}) }),
    log: config.log,
  };
  const target = new TargetSide({ name: config.name, journal, tracer, stagingDir: config.stagingDir, memoryReserveBytes: config.memoryReserveBytes, log: config.log });
  const migrations = new Map<string, SourceMigration>();

  const serve = (channel: Channel): void => {
    channel.handle(PsRequest, () => PsReply.make({ host: config.name, containers: listContainers() as unknown as Array<Record<string, unknown>> }));
    channel.handle(RunRequest, async ({ spec }) => RunReply.make({ container: (await runContainer(spec, tracer)) as unknown as Record<string, unknown> }));
    channel.handle(StopRequest, async ({ name, timeoutMs }) => StopReply.make({ report: (await stopContainer(name, timeoutMs)) as unknown as Record<string, unknown> }));

    channel.handle(MigrateRequest, ({ container, to, options }) => {
      const busy = [...migrations.values()].find((m) => m.containerName === container);
      if (busy) throw new MigrationError('BUSY', `container "${container}" is already being moved (migration ${busy.id})`);
      const m = SourceMigration.start(self, container, to, options, (e) => {
        if (channel.isOpen) channel.send(Progress.make(e));
      });
      migrations.set(m.id, m);
      void m.done.then((report) => {
        migrations.delete(m.id);
        if (channel.isOpen) channel.send(Finished.make({ report: report as unknown as Record<string, unknown> }));
      });
      return MigrationStarted.make({ id: m.id });
    });
    channel.handle(StatusRequest, ({ id }) => {
      if (id === null) return StatusReply.make({ host: config.name, migrations: journal.list() });
      const record = journal.read(id);
      if (!record) throw new MigrationError('UNKNOWN_MIGRATION', `${config.name} has no migration ${id}`);
      return StatusReply.make({ host: config.name, migrations: [record] });
    });
    channel.handle(CancelRequest, ({ id }) => {
      const m = migrations.get(id);
      const record = journal.read(id);
      if (!m && !record) throw new MigrationError('UNKNOWN_MIGRATION', `${config.name} has no migration ${id}`);
      if (!m || !m.cancel('cancelled by the operator')) throw new MigrationError('TOO_LATE', `migration ${id} is ${record?.phase ?? m!.phase}: too late to cancel`);
      return CancelReply.make({ id, phase: m.phase });
    });
    channel.handle(OutcomeRequest, ({ id }) => OutcomeReply.make({ phase: journal.read(id)?.phase ?? 'unknown' }));

    // The target's side of a migration, driven by the source agent over this channel.
    const mine = new Set<string>();
    channel.handle(PrepareRequest, async ({ id, needs, source }) => {
      await target.prepare(id, needs, source);
      mine.add(id);
      return Ok.make({});
    });
    for (const [file, stream] of Object.entries(IMAGE_STREAMS) as Array<[keyof typeof IMAGE_STREAMS, string]>) {
      channel.onStream(
        stream,
        (reader, { id }) => {
          if (!mine.has(id)) return reader.cancel(`no migration ${id} on ${config.name} expects an image`);
          return target.receive(id, file, reader);
        },
        ImageStreamMeta,
      );
    }
    channel.handle(ImageComplete, async ({ id, manifest }) => {
      await target.complete(id, manifest as unknown as Manifest);
      return Ok.make({});
    });
    channel.handle(RestoreRequest, async ({ id }) => RestoreReply.make(await target.restore(id)));
    channel.handle(ResumeRequest, async ({ id }) => {
      await target.resume(id);
      return Ok.make({});
    });
    channel.handle(DiscardRequest, async ({ id, reason }) => {
      await target.discard(id, reason);
      return Ok.make({});
    });
    void channel.closed.then((why) => {
      for (const id of mine) void target.sourceLost(id, why?.message ?? 'the connection closed', (lost) => askSourceUntilResolved(self, target, lost));
    });
  };

  const server = await listen({ host: config.host, port: config.port, token: config.token, hostName: config.name, ...(config.tls ? { tls: config.tls.server } : {}), onChannel: serve, log: config.log });
  const reaper = setInterval(reapContainers, REAP_INTERVAL_MS);
  config.log(`agent ${config.name} listening on ${address}${config.tls ? ' (TLS)' : ''}; state in ${stateDir()}`);
  await recoverMigrations(self, target);

  return {
    address,
    async close() {
      clearInterval(reaper);
      await server.close();
      for (const m of migrations.values()) m.cancel('the agent is shutting down');
      await Promise.all([...migrations.values()].map((m) => m.done));
      await tracer.close();
    },
  };
}

/** Reaps the inits of ended containers that are our children (started or restored by this agent). */
function reapContainers(): void {
  for (const s of listStates()) {
    try {
      if (processExists(s.pid) && isZombie(s.pid) && Number(readStat(s.pid).fields[4]) === process.pid) waitpid(s.pid, WAIT.WNOHANG);
    } catch {
      // gone between the looks
    }
  }
}
