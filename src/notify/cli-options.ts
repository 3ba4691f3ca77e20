import { Option, type Command } from 'commander';

/**
 * Adds the reporting options (metrics, webhook, healthcheck) to a CLI command; read back by
 * `reported()` in src/notify/index.ts under the same camelCase names.
 */
export function reportingOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--metrics-file <path>', 'write Prometheus metrics of this run to this file for node_exporter\'s textfile collector (atomic; one file per job, e.g. /var/lib/node_exporter/textfile/pg_backup_api.prom)'))
    .addOption(new Option('--pushgateway-url <url>', 'push Prometheus metrics of this run to this Pushgateway (grouped by job, service, environment, database)'))
    .addOption(new Option('--notify-url <url>', 'POST a JSON message (Slack / Teams incoming webhook format, "text" plus fields; Discord\'s own for discord.com/api/webhooks) here when the run fails; user:password@ is sent as HTTP Basic auth (default: $PG_BACKUP_NOTIFY_URL)').env('PG_BACKUP_NOTIFY_URL'))
    .addOption(new Option('--notify-on <when>', 'when to post to --notify-url').choices(['failure', 'always']).default('failure'))
    .addOption(new Option('--healthcheck-url <url>', 'healthchecks.io check URL: pings <url>/start, then <url> on success or <url>/fail with the reason; user:password@ is sent as HTTP Basic auth (default: $PG_BACKUP_HEALTHCHECK_URL)').env('PG_BACKUP_HEALTHCHECK_URL'))
    .addOption(new Option('--notify-timeout <duration>', 'per-attempt limit of each metrics push, webhook and ping (3 attempts; failures are warnings)').default('10s'));
}
