// A PG_BIN_DIR whose initdb and pg_ctl stop at a gate, so a test can act (send a signal) while a
// drill is in exactly that phase, every time, instead of polling for a process that may already
// be gone. The gated program leaves a file saying which phase it reached (the file stays, so the
// test cannot miss it) and waits until the test creates the `go` file:
//
//   initdb         before the real initdb runs (a cancelled drill kills it while it waits)
//   pg_ctl start   after the real `pg_ctl start` returned (the server is up) and before pg_ctl
//                  exits: the drill is still inside its pg_ctl start call
//
// Files, not a socket: the cluster's programs run as another OS user (pg-backup-drill), with a
// scrubbed environment and, where allowed, in a network namespace of their own, where a loopback
// TCP server of the test cannot be reached. The gate directory is written into the scripts and
// is writable by every user (mode 1777), like /tmp.
import { access, chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { realPgBin } from '../helpers.ts';

/** The phases a gate can hold. */
export type GatedPhase = 'initdb' | 'pg_ctl start';

export interface PhaseGate {
  /** The PG_BIN_DIR to give the drill: the real programs, initdb and pg_ctl wrapped. */
  binDir: string;
  /** Resolves once a gated program has reached `phase` and is waiting there; rejects after `ms` (60 s) when none did. */
  arrived(phase: GatedPhase, ms?: number): Promise<void>;
  /** Lets every waiting (and every later) gated program go on. */
  release(): Promise<void>;
  /** Releases and removes the directory. */
  close(): Promise<void>;
}

const fileOf = (phase: GatedPhase) => `arrived-${phase.replace(/ /g, '-')}`;

/** Makes a {@link PhaseGate} holding `phases` (the other programs run straight through). */
export async function phaseGate(phases: GatedPhase[]): Promise<PhaseGate> {
  const real = await realPgBin();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-gatebin-'));
  const bin = path.join(dir, 'bin');
  const signals = path.join(dir, 'gate');
  await mkdir(bin);
  await mkdir(signals);
  await chmod(signals, 0o1777);
  for (const p of ['pg_restore', 'psql', 'postgres', 'pg_dump']) await symlink(path.join(real, p), path.join(bin, p));
  const gate = (phase: GatedPhase) => `: > '${signals}/${fileOf(phase)}'\nwhile [ ! -e '${signals}/go' ]; do sleep 0.02; done\n`;
  await writeFile(
    path.join(bin, 'initdb'),
    phases.includes('initdb') ? `#!/bin/bash\nif [ "$1" != "--version" ] && [ "$1" != "-V" ]; then\n${gate('initdb')}fi\nexec ${real}/initdb "$@"\n` : `#!/bin/bash\nexec ${real}/initdb "$@"\n`,
  );
  await writeFile(
    path.join(bin, 'pg_ctl'),
    phases.includes('pg_ctl start') ? `#!/bin/bash\nif [ "$1" = "start" ]; then\n${real}/pg_ctl "$@"\nrc=$?\n${gate('pg_ctl start')}exit $rc\nfi\nexec ${real}/pg_ctl "$@"\n` : `#!/bin/bash\nexec ${real}/pg_ctl "$@"\n`,
  );
  await chmod(path.join(bin, 'initdb'), 0o755);
  await chmod(path.join(bin, 'pg_ctl'), 0o755);
  await chmod(bin, 0o755);
  await chmod(dir, 0o755);

  const release = () => writeFile(path.join(signals, 'go'), '');
  return {
    binDir: bin,
    arrived: async (phase, ms = 60_000) => {
      if (!phases.includes(phase)) throw new Error(`${phase} is not gated`);
      // The file stays once made: polling it cannot miss the phase, however short the program.
      for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) {
        if (await access(path.join(signals, fileOf(phase))).then(() => true, () => false)) return;
      }
      throw new Error(`no program reached the ${phase} gate in ${ms} ms`);
    },
    release,
    close: async () => {
      await release();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
