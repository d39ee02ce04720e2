/** The published type declarations compile in a consumer's strict project, without skipLibCheck. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('a strict TypeScript consumer of the package type-checks against dist/*.d.ts (no WebGPU types needed)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'minigpt-types-'));
  await mkdir(join(dir, 'node_modules'));
  await symlink(ROOT, join(dir, 'node_modules', 'minigpt'), 'dir');
  await writeFile(join(dir, 'package.json'), '{"type":"module"}');
  await writeFile(join(dir, 'use.ts'), [
    "import { train, loadModel, generate, scoreText, findLearningRate, loadTrainingData, resolveConfig, type TrainOptions } from 'minigpt';",
    "const o: TrainOptions = { steps: 10, model: { d_model: 64 }, onStep: (s) => console.log(s.loss, s.tokensPerSecond) };",
    'const summary = await train(o);',
    'const loaded = await loadModel(summary.checkpoint);',
    "for await (const t of generate(loaded, 'a', { maxTokens: 3 })) console.log(t.text);",
    "const { loss } = await scoreText(loaded, 'ab');",
    "const data = await loadTrainingData({ data: 'x.txt' });",
    'const r = await findLearningRate({ config: resolveConfig({ vocab_size: data.tokenizer.vocabSize }), train: data.train });',
    'console.log(loss, r.suggestion);',
    '// A backend name is checked at compile time: a typo is an error here, not at run time.',
    '// @ts-expect-error',
    "await loadModel(summary.checkpoint, { backend: 'cuda' });",
    "await loadModel(summary.checkpoint, { backend: 'cpu' });",
    '',
  ].join('\n'));
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  // Only @types/node from outside: the declarations must not need @webgpu/types or DOM types.
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
    '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types'), 'use.ts'], { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('every type a public signature names is exported from the package, so a user can name it', async () => {
  const { default: ts } = await import('typescript');
  const index = join(ROOT, 'dist', 'src', 'index.d.ts');
  const program = ts.createProgram([index], { strict: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, types: [] });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(index)!)!;
  const resolved = (s: import('typescript').Symbol): import('typescript').Symbol => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);
  const exported = new Set(checker.getExportsOfModule(moduleSymbol).map(resolved));
  const ours = (d: import('typescript').Declaration): boolean => d.getSourceFile().fileName.startsWith(join(ROOT, 'dist', 'src'));
  const missing = new Map<string, Set<string>>();
  for (const symbol of exported) {
    for (const declaration of symbol.declarations ?? []) {
      const visit = (node: import('typescript').Node): void => {
        if (ts.isTypeReferenceNode(node) || ts.isExpressionWithTypeArguments(node) || ts.isTypeQueryNode(node)) {
          let name = ts.isTypeReferenceNode(node) ? node.typeName : ts.isTypeQueryNode(node) ? node.exprName : node.expression;
          // Enum.MEMBER: the enum is what a user imports.
          while (ts.isQualifiedName(name)) name = name.left;
          const target = checker.getSymbolAtLocation(name);
          // Type parameters and names from outside the package (lib, @types/node) are the user's to name.
          if (target && !(target.flags & ts.SymbolFlags.TypeParameter)) {
            const real = resolved(target);
            if ((real.declarations ?? []).some(ours) && !exported.has(real)) {
              const uses = missing.get(real.name) ?? new Set<string>();
              uses.add(symbol.name);
              missing.set(real.name, uses);
            }
          }
        }
        // A member's own body (a function's statements) is not part of its signature; .d.ts files have none.
        ts.forEachChild(node, visit);
      };
      visit(declaration);
    }
  }
  const report = [...missing].map(([name, uses]) => `${name} (named by ${[...uses].join(', ')})`).join('\n');
  assert.equal(missing.size, 0, `types named in public declarations but not exported from src/index.ts:\n${report}`);
});

test('each TrainOptions field with a default names it in its doc comment (TRAIN_DEFAULTS)', async () => {
  const { default: ts } = await import('typescript');
  const { TRAIN_DEFAULTS } = await import('../src/train/train.js');
  const file = join(ROOT, 'dist', 'src', 'train', 'train.d.ts');
  const program = ts.createProgram([file], { strict: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, types: [] });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file)!;
  const options = source.statements.find((s): s is import('typescript').InterfaceDeclaration => ts.isInterfaceDeclaration(s) && s.name.text === 'TrainOptions')!;
  const docs = new Map(options.members.map((m) => [(m.name as import('typescript').Identifier).text, ts.displayPartsToString(checker.getSymbolAtLocation(m.name!)!.getDocumentationComment(checker))]));
  const wrong = Object.entries(TRAIN_DEFAULTS).filter(([k, v]) => !(docs.get(k) ?? '').includes('default') || !(docs.get(k) ?? '').includes(String(v)));
  assert.deepEqual(wrong.map(([k, v]) => `${k} (default ${String(v)}): ${docs.get(k)}`), []);
});
