// A small GitHub-REST-compatible server on loopback for the failure-issue tests: the issue
// endpoints the actions use (list by label, create, comment, update), in memory.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeIssue {
  number: number;
  title: string;
  body: string;
  state: 'open' | 'closed';
  state_reason: string | null;
  labels: { name: string }[];
  comments: string[];
}

export interface FakeGitHub {
  url: string;
  token: string;
  issues: FakeIssue[];
  requests: string[];
  close(): Promise<void>;
}

/** Starts the fake on 127.0.0.1; every request must carry `Authorization: token <token>` (or Bearer). */
export async function startFakeGitHub(owner: string, repo: string, token = 'ghs_fake_token_123'): Promise<FakeGitHub> {
  const issues: FakeIssue[] = [];
  const requests: string[] = [];
  const base = `/repos/${owner}/${repo}/issues`;
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
    const url = new URL(req.url!, 'http://x');
    requests.push(`${req.method} ${url.pathname}${url.search}`);
    const send = (status: number, data: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(data));
    };
    const view = (i: FakeIssue) => ({ ...i, comments: i.comments.length, html_url: `https://github.example/${owner}/${repo}/issues/${i.number}` });
    if (!/^(token|Bearer) /.test(req.headers.authorization ?? '') || !req.headers.authorization!.endsWith(` ${token}`)) return send(401, { message: 'Bad credentials' });
    if (req.method === 'GET' && url.pathname === base) {
      const state = url.searchParams.get('state') ?? 'open';
      const labels = (url.searchParams.get('labels') ?? '').split(',').filter(Boolean);
      const page = Number(url.searchParams.get('page') ?? 1);
      const perPage = Number(url.searchParams.get('per_page') ?? 30);
      const all = issues.filter((i) => (state === 'all' || i.state === state) && labels.every((l) => i.labels.some((x) => x.name === l)));
      const slice = all.slice((page - 1) * perPage, page * perPage);
      if (page * perPage < all.length) res.setHeader('link', `<http://127.0.0.1${base}?page=${page + 1}&per_page=${perPage}&state=${state}&labels=${labels.join(',')}>; rel="next"`);
      return send(200, slice.map(view));
    }
    if (req.method === 'POST' && url.pathname === base) {
      const issue: FakeIssue = { number: issues.length + 1, title: body.title, body: body.body ?? '', state: 'open', state_reason: null, labels: (body.labels ?? []).map((name: string) => ({ name })), comments: [] };
      issues.push(issue);
      return send(201, view(issue));
    }
    const m = /^\/repos\/[^/]+\/[^/]+\/issues\/(\d+)(\/comments)?$/.exec(url.pathname);
    const issue = m ? issues.find((i) => i.number === Number(m[1])) : undefined;
    if (issue && req.method === 'POST' && m![2]) {
      issue.comments.push(body.body);
      return send(201, { id: issue.comments.length, body: body.body });
    }
    if (issue && req.method === 'PATCH' && !m![2]) {
      if (body.state) issue.state = body.state;
      if (body.state_reason) issue.state_reason = body.state_reason;
      return send(200, view(issue));
    }
    return send(404, { message: 'Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, token, issues, requests, close: () => new Promise((r) => server.close(() => r())) };
}
