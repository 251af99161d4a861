/**
 * The import rule of shardledger (`npm run depcheck`, run by .ci/run after lint).
 *
 * The domain folders (events, machines, maintenance, projections, storage, datasets) are pure:
 * they import no adapter, no driver and not the layers above them, so the fold and the planners
 * can be replayed and tested without a database or a bucket. Adapters implement the domain's ports
 * and never reach up into the facade or the CLI. See docs/architecture.md.
 */
const DOMAIN = "^src/(events|machines|maintenance|projections|storage|datasets)/";
// Matched on the resolved path, so a type-only import counts too.
const DRIVERS = "(^|/)node_modules/(pg|kysely|@electric-sql/pglite|@aws-sdk/[^/]+)/";

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "No module imports itself through a chain of imports.",
      from: {},
      to: { circular: true },
    },
    {
      name: "domain-imports-no-adapter",
      severity: "error",
      comment:
        "Domain folders import no adapter, facade or CLI: they work through ports (EventLog, ObjectStore).",
      from: { path: DOMAIN },
      to: { path: "^src/(adapters|ledger|cli|demo)/" },
    },
    {
      name: "domain-imports-no-driver",
      severity: "error",
      comment: "Domain folders import no database or object-store driver, and no query builder.",
      from: { path: DOMAIN },
      to: { path: DRIVERS },
    },
    {
      name: "adapters-import-no-facade",
      severity: "error",
      comment: "Adapters implement ports; they never reach up into the facade, the CLI or the demo.",
      from: { path: "^src/adapters/" },
      to: { path: "^src/(ledger|cli|demo)/" },
    },
    {
      name: "ledger-uses-the-event-log-port",
      severity: "error",
      comment:
        "Use-cases append and read through the EventLog port (src/events/event-log.ts); only the composition file builds the PostgreSQL log.",
      from: { path: "^src/ledger/", pathNot: "^src/ledger/open-ledger[.]ts$" },
      to: { path: "^src/adapters/postgres/pg-event-log[.]ts$" },
    },
    {
      name: "built-events-stay-private",
      severity: "error",
      comment:
        "Only the event builder marks an event as built from validated data, and only the event log asks (src/events/built-events.ts): any other writer's events are validated at append.",
      from: {
        pathNot: "^src/(machines/run-commands|adapters/postgres/pg-event-log|events/built-events)[.]ts$",
      },
      to: { path: "^src/events/built-events[.]ts$" },
    },
    {
      name: "ledger-imports-no-cli",
      severity: "error",
      comment: "The facade serves the CLI, never the other way round.",
      from: { path: "^src/ledger/" },
      to: { path: "^src/(cli|demo)/" },
    },
    {
      name: "only-the-cli-starts-the-server",
      severity: "error",
      comment:
        "The HTTP server (src/server) is an edge like the CLI: the library and the domain never import it, so hono, pino and prom-client load only for `serve` (and `demo --serve`, which imports it lazily after the demo).",
      from: { path: "^src/", pathNot: "^src/(server|cli/commands/(serve|demo)[.]ts$)" },
      to: { path: "^src/server/" },
    },
    {
      name: "server-uses-the-library-not-the-cli",
      severity: "error",
      comment:
        "The server calls the ledger facade; of the CLI it shares only the JSON output (`--json` shapes).",
      from: { path: "^src/server/" },
      to: { path: "^src/cli/", pathNot: "^src/cli/json-output[.]ts$" },
    },
    {
      name: "server-route-areas-stand-alone",
      severity: "error",
      comment:
        "Each file of src/server/routes declares one area's endpoints through the RouteContext the app hands it: it imports no other area and not the app that assembles them.",
      from: { path: "^src/server/routes/" },
      to: {
        path: "^src/server/(app|start-server)[.]ts$|^src/server/routes/",
        pathNot: "^src/server/routes/route-context[.]ts$",
      },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".json"],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
