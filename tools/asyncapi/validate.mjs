// Validates LaborNet's AsyncAPI documents with the AsyncAPI project's own parser (@asyncapi/parser).
//
//   node tools/asyncapi/validate.mjs [file ...]      (default: every docs/asyncapi/*.json of the repository)
//
// Prints every error and warning with its path in the document (information and hints are only counted) and
// exits 1 when any diagnostic has severity error or a file cannot be read, 0 otherwise.
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DiagnosticSeverity, Parser } from '@asyncapi/parser';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

async function defaultFiles() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const folder = path.resolve(here, '..', '..', 'docs', 'asyncapi');
  const names = (await readdir(folder)).filter((name) => name.endsWith('.json')).sort();
  return names.map((name) => path.join(folder, name));
}

async function validate(parser, file) {
  const text = await readFile(file, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: file });
  let errors = 0;
  let notes = 0;
  for (const diagnostic of diagnostics) {
    const severity = SEVERITY[diagnostic.severity] ?? String(diagnostic.severity);
    if (diagnostic.severity === DiagnosticSeverity.Error) errors += 1;
    if (diagnostic.severity > DiagnosticSeverity.Warning) {
      notes += 1;
      continue;
    }
    const where = diagnostic.path && diagnostic.path.length ? diagnostic.path.join('.') : '(document)';
    console.log(`${file}: ${severity} ${diagnostic.code} at ${where}: ${diagnostic.message}`);
  }
  if (document === undefined && errors === 0) {
    console.log(`${file}: error: the parser produced no document`);
    errors += 1;
  }
  const summary = document
    ? `AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
      `${document.operations().length} operations, ${document.messages().length} messages`
    : 'not parsed';
  console.log(`${file}: ${errors === 0 ? 'valid' : `${errors} error(s)`} (${summary}; ${notes} hint(s))`);
  return errors;
}

const files = process.argv.length > 2 ? process.argv.slice(2) : await defaultFiles();
if (files.length === 0) {
  console.error('no AsyncAPI documents to validate');
  process.exit(1);
}
const parser = new Parser();
let failed = 0;
for (const file of files) {
  try {
    if ((await validate(parser, file)) > 0) failed += 1;
  } catch (error) {
    console.log(`${file}: error: ${error.message}`);
    failed += 1;
  }
}
process.exit(failed === 0 ? 0 : 1);
