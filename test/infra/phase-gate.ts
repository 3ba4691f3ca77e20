// A PG_BIN_DIR whose initdb and pg_ctl stop at a gate, so a test can act (send a signal) while a
// drill is in exactly that phase, every time, instead of polling for a process that may already
// be gone. The gated program connects to a loopback TCP server of the test (bash's /dev/tcp),
// says which phase it is in, and waits for the test to answer before it goes on:
//
//   initdb         before the real initdb runs (a cancelled drill kills it while it waits)
//   pg_ctl start   after the real `pg_ctl start` returned (the server is up) and before pg_ctl
//                  exits: the drill is still inside its pg_ctl start call
//
// The port is written into the scripts (the throwaway cluster's programs may get a scrubbed
// environment), and the scripts run as whichever OS user runs the cluster (postgres when the
// tests run as root).
import { chmod, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
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
  release(): void;
  /** Releases, closes the server and removes the directory. */
  close(): Promise<void>;
}

/** Makes a {@link PhaseGate} holding `phases` (the other programs run straight through). */
export async function phaseGate(phases: GatedPhase[]): Promise<PhaseGate> {
  const real = await realPgBin();
  const waiting = new Set<net.Socket>();
  const reached = new Map<GatedPhase, () => void>();
  const promises = new Map<GatedPhase, Promise<void>>();
  for (const p of phases) promises.set(p, new Promise<void>((resolve) => reached.set(p, resolve)));
  let released = false;
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    let text = '';
    socket.on('data', (d) => {
      text += d;
      const line = text.split('\n')[0]!;
      if (!text.includes('\n')) return;
      if (released) socket.end('go\n');
      else waiting.add(socket);
      reached.get(line as GatedPhase)?.();
    });
    socket.on('close', () => waiting.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;

  const dir = await mkdtemp(path.join(os.tmpdir(), 'pgb-gatebin-'));
  for (const p of ['pg_restore', 'psql', 'postgres', 'pg_dump']) await symlink(path.join(real, p), path.join(dir, p));
  const gate = (phase: GatedPhase) => `exec 3<>/dev/tcp/127.0.0.1/${port} || exit 97\necho '${phase}' >&3\nread -r _ <&3\nexec 3>&-\n`;
  await writeFile(
    path.join(dir, 'initdb'),
    phases.includes('initdb') ? `#!/bin/bash\nif [ "$1" != "--version" ] && [ "$1" != "-V" ]; then\n${gate('initdb')}fi\nexec ${real}/initdb "$@"\n` : `#!/bin/bash\nexec ${real}/initdb "$@"\n`,
  );
  await writeFile(
    path.join(dir, 'pg_ctl'),
    phases.includes('pg_ctl start') ? `#!/bin/bash\nif [ "$1" = "start" ]; then\n${real}/pg_ctl "$@"\nrc=$?\n${gate('pg_ctl start')}exit $rc\nfi\nexec ${real}/pg_ctl "$@"\n` : `#!/bin/bash\nexec ${real}/pg_ctl "$@"\n`,
  );
  await chmod(path.join(dir, 'initdb'), 0o755);
  await chmod(path.join(dir, 'pg_ctl'), 0o755);
  await chmod(dir, 0o755);

  const release = () => {
    released = true;
    for (const s of waiting) s.end('go\n');
    waiting.clear();
  };
  return {
    binDir: dir,
    arrived: (phase, ms = 60_000) => {
      const reachedIt = promises.get(phase);
      if (!reachedIt) return Promise.reject(new Error(`${phase} is not gated`));
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no program reached the ${phase} gate in ${ms} ms`)), ms);
      });
      return Promise.race([reachedIt, timeout]).finally(() => clearTimeout(timer));
    },
    release,
    close: async () => {
      release();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
