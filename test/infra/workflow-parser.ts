// GitHub's own workflow parser and expression evaluator (npm @actions/workflow-parser and
// @actions/expressions, the packages behind the Actions language service), for tests.
//
// The parser's ESM build imports its JSON schema without an import attribute, which Node
// refuses, so both packages are bundled here once per process with esbuild (`--format=cjs`,
// in memory, nothing written) and loaded as a CommonJS module.
import { createRequire } from 'node:module';
import { build } from 'esbuild';
import { root } from '../helpers.ts';

/** A token of the parsed workflow as its JSON form: a literal, or `{ type, map | seq | expr }`. */
export type TokenJson = string | number | boolean | null | { type: number; map?: { Key: TokenJson; Value: TokenJson }[]; seq?: TokenJson[]; expr?: string };

/** The parser's token types (TokenType in @actions/workflow-parser). */
export const TokenType = { String: 0, Sequence: 1, Mapping: 2, BasicExpression: 3, InsertExpression: 4, Boolean: 5, Number: 6, Null: 7 } as const;

/** A workflow as GitHub reads it: the parser's and the converter's errors, the token tree and the converted template. */
export interface ParsedWorkflow {
  /** Every error the parser and `convertWorkflowTemplate` reported, as `file: message`. */
  errors: string[];
  /** The parsed token tree (the whole file), as JSON. */
  tokens: TokenJson;
  /** `convertWorkflowTemplate`'s result (events, jobs with their types, `inherit-secrets`, …), as JSON. */
  template: { events: Record<string, unknown>; jobs: Record<string, unknown>[] };
}

/* eslint-disable @typescript-eslint/no-explicit-any */
let loaded: Promise<any> | undefined;

/** Bundles and loads both packages (once per process). */
function load(): Promise<any> {
  loaded ??= (async () => {
    const out = await build({
      stdin: { contents: "export * from '@actions/workflow-parser'; export * as expressions from '@actions/expressions';", resolveDir: root, loader: 'js' },
      bundle: true,
      format: 'cjs',
      platform: 'node',
      write: false,
      logLevel: 'error',
      // NODE_PATH is honoured, as Node's own resolver does.
      nodePaths: (process.env.NODE_PATH ?? '').split(':').filter(Boolean),
    });
    const module = { exports: {} as any };
    new Function('module', 'exports', 'require', out.outputFiles[0]!.text)(module, module.exports, createRequire(import.meta.url));
    return module.exports;
  })();
  return loaded;
}

/**
 * Parses one workflow file with `parseWorkflow`, then `convertWorkflowTemplate`, as GitHub
 * does before a run (schema, expression syntax and the contexts each key allows).
 * @param name the file's name in error messages.
 */
export async function parseWorkflowFile(name: string, content: string): Promise<ParsedWorkflow> {
  const wp = await load();
  const parsed = wp.parseWorkflow({ name, content }, new wp.NoOperationTraceWriter());
  const errors: string[] = parsed.context.errors.getErrors().map((e: { message: string }) => e.message);
  let template: ParsedWorkflow['template'] = { events: {}, jobs: [] };
  if (parsed.value) {
    const converted = await wp.convertWorkflowTemplate(parsed.context, parsed.value);
    template = JSON.parse(JSON.stringify(converted));
    for (const e of converted.errors ?? []) if (!errors.includes(e.Message)) errors.push(e.Message);
  }
  return { errors, tokens: parsed.value ? JSON.parse(JSON.stringify(parsed.value)) : null, template };
}

/**
 * Evaluates one expression (the text inside `${{ }}`) with GitHub's evaluator over `context`
 * (plain JSON: `{ inputs: {…}, secrets: {…}, vars: {…}, runner: {…}, … }`; a missing property is null).
 * @returns the value as GitHub turns it into a string (booleans `true`/`false`, null as empty).
 */
export async function evaluateExpression(expression: string, context: Record<string, unknown>): Promise<string> {
  const { expressions: ex } = await load();
  const lexed = new ex.Lexer(expression).lex();
  const ast = new ex.Parser(lexed.tokens, Object.keys(context), []).parse();
  const data = JSON.parse(JSON.stringify(context), ex.data.reviver);
  return new ex.Evaluator(ast, data).evaluate().coerceString();
}

/** Replaces every `${{ … }}` of `text` with its value ({@link evaluateExpression}). */
export async function evaluateTemplate(text: string, context: Record<string, unknown>): Promise<string> {
  let out = '';
  let last = 0;
  for (const m of text.matchAll(/\$\{\{\s*([\s\S]+?)\s*\}\}/g)) {
    out += text.slice(last, m.index) + (await evaluateExpression(m[1]!, context));
    last = m.index! + m[0].length;
  }
  return out + text.slice(last);
}
