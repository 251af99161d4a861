/**
 * A maintenance process for the crash test: runs one `cleanup` pass on the dataset named in the
 * environment, over a filesystem store wrapped so that it announces each step on stdout and pauses
 * there, giving the parent a window to SIGKILL it at exactly that step. The pauses are the only
 * thing not real here; the database, the lock and the files are.
 */
import { openObjectStore } from "../../src/adapters/objectstore/open-object-store.js";
import { openLedger } from "../../src/ledger/open-ledger.js";
import type { ObjectStore } from "../../src/storage/object-store.js";

const pause = () => new Promise((resolve) => setTimeout(resolve, Number(process.env.PAUSE_MS ?? 300)));
const mark = (what: string) => process.stdout.write(`MARK ${what}\n`);

function announcing(store: ObjectStore): ObjectStore {
  return {
    rootUrl: store.rootUrl,
    async list(prefix, options) {
      const page = await store.list(prefix, options);
      mark(page.objects.length === 0 ? "verified-empty" : "listed");
      await pause();
      return page;
    },
    async deleteMany(keys) {
      const half = Math.ceil(keys.length / 2);
      const first = await store.deleteMany(keys.slice(0, half));
      mark("mid-batch");
      await pause();
      const rest = await store.deleteMany(keys.slice(half));
      return { deleted: [...first.deleted, ...rest.deleted], errors: [...first.errors, ...rest.errors] };
    },
    put: (key, body, options) => store.put(key, body, options),
    get: (key) => store.get(key),
  };
}

const ledger = await openLedger({
  database: process.env.DATABASE_URL as string,
  schema: process.env.LEDGER_SCHEMA as string,
  migrate: false,
  cleanupAfterPublish: false,
  objectStore: (root) => announcing(openObjectStore(root)),
});
mark("started");
const report = await ledger.cleanup({ datasetId: process.env.DATASET_ID as string });
mark(`done ${JSON.stringify(report)}`);
await ledger.close();
