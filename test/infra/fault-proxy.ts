// A fault-injecting TCP proxy on loopback, between the tool and Ceph RGW (its HTTP or its HTTPS
// port: TLS passes through, so the endpoint has the upstream's scheme): it can reset
// connections after N bytes, stall them (the connection stays open, bytes stop flowing both
// ways), throttle them, or answer "503 Slow Down" instead of forwarding a request.
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface FaultPlan {
  /** Reset a connection once it has carried this many bytes towards the server… */
  resetAfterBytes?: number;
  /** …for this many connections (default: all). */
  resets?: number;
  /** Answer this many connections' first request with 503 SlowDown and close them (a plain-HTTP upstream only: the answer is not encrypted). */
  slowDowns?: number;
  /**
   * Stall a connection once it has carried this many bytes towards the server: from then on
   * nothing is forwarded either way and nothing is read from the client (its TCP send buffer
   * fills), but the connection stays open, as behind a black-holing middlebox. Small requests
   * (CreateMultipartUpload, AbortMultipartUpload) on fresh connections still pass.
   */
  stallAfterBytes?: number;
  /** …for this many connections (default: all). */
  stalls?: number;
  /** Forward at most this many bytes per second towards the server, per connection (a slow uplink). */
  throttleBytesPerSecond?: number;
}

export interface FaultProxy {
  endpoint: string;
  /** Faults injected so far. */
  stats: { connections: number; resets: number; slowDowns: number; stalls: number };
  close(): Promise<void>;
}

export async function startFaultProxy(upstream: string, plan: FaultPlan): Promise<FaultProxy> {
  const target = new URL(upstream);
  const stats = { connections: 0, resets: 0, slowDowns: 0, stalls: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    stats.connections++;
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    if (stats.slowDowns < (plan.slowDowns ?? 0)) {
      stats.slowDowns++;
      client.once('data', () => {
        const body = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
        client.end(`HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      });
      return;
    }
    const server = net.connect(Number(target.port), target.hostname);
    sockets.add(server);
    server.on('close', () => sockets.delete(server));
    server.on('error', () => client.destroy());
    let sent = 0;
    const willReset = plan.resetAfterBytes !== undefined && stats.resets < (plan.resets ?? Infinity);
    let isStalled = false;
    client.on('data', (chunk: Buffer) => {
      if (isStalled) return;
      sent += chunk.length;
      if (willReset && sent > plan.resetAfterBytes!) {
        stats.resets++;
        client.resetAndDestroy();
        server.destroy();
        return;
      }
      if (plan.stallAfterBytes !== undefined && sent > plan.stallAfterBytes && stats.stalls < (plan.stalls ?? Infinity)) {
        // Black hole: stop reading from the client and forwarding to it; keep both ends open.
        isStalled = true;
        stats.stalls++;
        client.pause();
        server.unpipe(client);
        server.pause();
        return;
      }
      if (plan.throttleBytesPerSecond) {
        // Hold the client until this chunk's share of the second has passed.
        client.pause();
        server.write(chunk);
        setTimeout(() => {
          if (!isStalled) client.resume();
        }, (chunk.length / plan.throttleBytesPerSecond) * 1000);
        return;
      }
      if (!server.write(chunk)) client.pause();
    });
    server.on('drain', () => {
      if (!isStalled) client.resume();
    });
    server.pipe(client);
    client.on('end', () => server.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `${target.protocol}//127.0.0.1:${port}`,
    stats,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
