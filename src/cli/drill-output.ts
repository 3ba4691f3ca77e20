/**
 * Where a drill's log and report went, as the CLI prints them after every drill, passed or
 * failed (on stderr, before the verdict line): `drill log: <uri>` and `drill report: <uri>`,
 * the keys under `drills/<service>/<environment>/<database>/<YYYY>-Q<n>/` as URIs. A drill whose
 * record could not be written has no URI: its warning (`drill log not archived: …`) said so.
 */
export function printDrillRecordUris(result: { drillLogUri?: string; drillReportUri?: string }): void {
  if (result.drillLogUri) process.stderr.write(`drill log: ${result.drillLogUri}\n`);
  if (result.drillReportUri) process.stderr.write(`drill report: ${result.drillReportUri}\n`);
}
