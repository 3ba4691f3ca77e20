import { UsageError } from '../errors.ts';

/**
 * A `true`/`false` action input (any case; empty or missing: false).
 * @throws UsageError for any other value, naming the input.
 */
export function booleanInput(inputs: Record<string, string | undefined>, name: string): boolean {
  const value = (inputs[name] ?? 'false').trim().toLowerCase() || 'false';
  if (!['true', 'false'].includes(value)) throw new UsageError(`input "${name}" must be true or false (got ${JSON.stringify(inputs[name])})`);
  return value === 'true';
}
