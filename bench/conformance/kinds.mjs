// Prints {test id: {kind, depends, name, suite}} for the suite installed at argv[2].
import { existsSync } from 'fs'
const root = process.argv[2]
const { default: tests } = await import(`${root}/tests/index.mjs`)
if (existsSync(`${root}/cli.mjs`)) { // 0.4.5's cli.mjs adds this suite; test-engine/cli.mjs does not
  const { default: surrogate } = await import(`${root}/tests/surrogate-control.mjs`)
  tests.push(surrogate)
}
const out = {}
for (const suite of tests) {
  for (const t of suite.tests) {
    out[t.id] = { kind: t.kind || 'required', depends: t.depends_on || [], name: t.name, suite: suite.id }
  }
}
console.log(JSON.stringify(out))
