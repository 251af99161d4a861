/**
 * Type-checks the examples users read: the ```ts block in the TSDoc `@example` of every export of
 * src/index.ts, and every ```ts block of the README. Each example becomes a module under
 * `.doc-examples/` (inside the package, so `import … from "shardledger"` resolves through the
 * package's `exports` to the built `dist/` types, as for a user), wrapped in an async function
 * after a prelude that imports every public name and declares the variables examples take as
 * given (`ledger`, `store`, `e`, …). Fails listing the public symbols without an example and every
 * example that does not compile. Run `npm run build` first.
 *
 * Usage: tsx scripts/check-doc-examples.ts
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import ts from "typescript";

const repo = resolve(import.meta.dirname, "..");
const entry = join(repo, "src/index.ts");
const outDir = join(repo, ".doc-examples");

/** Variables examples use without declaring them, as the surrounding prose would have them. */
const GIVEN = `
declare const ledger: Ledger
declare const store: ObjectStore
declare const log: EventLog
declare const e: unknown
declare const runId: string
declare const datasetId: string
declare const key: string
declare const url: string
declare const root: string
declare const keys: string[]
declare const events: RecordedEvent[]
declare const manifest: Manifest
declare const hold: SafetyWindowHold
declare const startedAt: Date
declare const finishedAt: Date
declare const database: Awaited<ReturnType<typeof openDatabase>>
`;

interface Example {
  /** The public symbol (or `README#n`) the example documents. */
  readonly owner: string;
  readonly code: string;
}

function fencedTsBlocks(text: string): string[] {
  return [...text.matchAll(/```(?:ts|typescript)\n([\s\S]*?)```/g)].map((m) =>
    (m[1] ?? "").replace(/^ ?\* ?/gm, ""),
  );
}

/** The public exports of the package entry and the ```ts blocks of their TSDoc `@example`s. */
function publicExamples(): {
  names: { values: string[]; types: string[] };
  examples: Example[];
  missing: string[];
} {
  const program = ts.createProgram({
    rootNames: [entry],
    options: {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      noEmit: true,
    },
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(entry);
  const moduleSymbol = source && checker.getSymbolAtLocation(source);
  if (!moduleSymbol) throw new Error(`cannot read the exports of ${entry}`);
  const values: string[] = [];
  const types: string[] = [];
  const examples: Example[] = [];
  const missing: string[] = [];
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const name = exported.getName();
    (symbol.flags & ts.SymbolFlags.Value ? values : types).push(name);
    const blocks = symbol
      .getJsDocTags(checker)
      .filter((tag) => tag.name === "example")
      .flatMap((tag) => fencedTsBlocks(ts.displayPartsToString(tag.text)));
    if (blocks.length === 0) missing.push(name);
    for (const code of blocks) examples.push({ owner: name, code });
  }
  return { names: { values, types }, examples, missing };
}

function readmeExamples(): Example[] {
  const readme = readFileSync(join(repo, "README.md"), "utf8");
  return fencedTsBlocks(readme).map((code, i) => ({ owner: `README.md#${i + 1}`, code }));
}

/** One example as a module: its own imports first, the prelude, then its body in an async function. */
function moduleOf(example: Example, names: { values: string[]; types: string[] }): string {
  // Imports (one or many lines) and ambient declarations are only legal at the top of a module.
  const hoisted = /^(?:import\s[\s\S]*?\sfrom\s+["'][^"']+["'];?|declare\s.*)$/gm;
  const imports = example.code.match(hoisted) ?? [];
  const body = example.code.replace(hoisted, "").split("\n");
  const own = new Set(imports.flatMap((l) => [...l.matchAll(/\b(\w+)\b/g)].map((m) => m[1])));
  const fromPackage = [...names.values, ...names.types.map((t) => `type ${t}`)].filter(
    (n) => !own.has(n.replace(/^type /, "")),
  );
  return [
    ...imports,
    `import { ${fromPackage.join(", ")} } from "shardledger"`,
    GIVEN,
    `export async function example(): Promise<void> {`,
    ...body,
    `}`,
    "",
  ].join("\n");
}

function main(): number {
  if (!existsSync(join(repo, "dist/index.d.ts"))) {
    console.error("check-doc-examples: dist/index.d.ts is missing; run `npm run build` first");
    return 1;
  }
  const { names, examples, missing } = publicExamples();
  const all = [...examples, ...readmeExamples()];
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const files = all.map((example, i) => {
    const file = join(outDir, `${String(i).padStart(3, "0")}-${example.owner.replace(/[^\w]/g, "_")}.ts`);
    writeFileSync(file, moduleOf(example, names));
    return { file, example };
  });
  const program = ts.createProgram({
    rootNames: files.map((f) => f.file),
    options: {
      target: ts.ScriptTarget.ES2022,
      lib: ["lib.es2023.d.ts"],
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      strict: true,
      skipLibCheck: true,
      noEmit: true,
      types: ["node"],
    },
  });
  const diagnostics = ts.getPreEmitDiagnostics(program);
  const host: ts.FormatDiagnosticsHost = {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: () => repo,
    getNewLine: () => "\n",
  };
  const failing = new Set<string>();
  for (const d of diagnostics) {
    const owner = files.find((f) => f.file === d.file?.fileName)?.example.owner ?? "(prelude)";
    failing.add(owner);
    console.error(`${owner}: ${ts.formatDiagnostic(d, host).trim()}`);
  }
  if (missing.length > 0) {
    console.error(`public symbols without a \`\`\`ts @example (${missing.length}): ${missing.join(", ")}`);
  }
  const ok = diagnostics.length === 0 && missing.length === 0;
  if (ok) rmSync(outDir, { recursive: true, force: true });
  console.log(
    `doc examples: ${all.length} checked (${examples.length} from the TSDoc of ${names.values.length + names.types.length} public symbols, ${all.length - examples.length} from the README); ` +
      `${failing.size} failing, ${missing.length} symbols without one${ok ? "" : `; the modules are in ${relative(repo, outDir)}/`}`,
  );
  return ok ? 0 : 1;
}

process.exitCode = main();
