/**
 * A maintenance process for the concurrent crash test: one concurrent `cleanup` pass over the S3
 * model named in the environment, announcing on stdout each batch delete the store confirmed, so
 * the parent can SIGKILL it at a chosen one while many prefixes are in flight. Nothing here is a
 * stand-in: the database, the lock, the model's HTTP server and its latencies are real.
 */
import { createS3ObjectStore } from "../../src/adapters/objectstore/s3-object-store.js";
import { openLedger } from "../../src/ledger/open-ledger.js";
import type { ObjectStore } from "../../src/storage/object-store.js";
import { s3ModelClient } from "./s3-model.js";

const mark = (what: string) => process.stdout.write(`MARK ${what}\n`);
const client = s3ModelClient(process.env.S3_MODEL_ENDPOINT as string);

function announcing(store: ObjectStore): ObjectStore {
  return {
    rootUrl: store.rootUrl,
    list: (prefix, options) => store.list(prefix, options),
    async deleteMany(keys) {
      const outcome = await store.deleteMany(keys);
      mark("deleted");
      return outcome;
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
  objectStore: (root) => announcing(createS3ObjectStore(root, { client })),
});
mark("started");
const report = await ledger.cleanup({ datasetId: process.env.DATASET_ID as string, concurrency: 8 });
mark(`done ${JSON.stringify(report)}`);
await ledger.close();
