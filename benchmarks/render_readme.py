"""Writes the README's "Results" section from the committed results files, so that no figure there is typed by hand.

python benchmarks/render_readme.py          # rewrite README.md between the results markers
python benchmarks/render_readme.py --check  # exit 1 if README.md is not what the results files give
"""

import argparse
import glob
import os
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- results:start (benchmarks/render_readme.py) -->", "<!-- results:end -->"
ORDER = ("accuracy.md", "s2ca_diagnosis.md", "gpu_throughput-*.md", "data_pipeline.md", "search.md")


def results_files(results_dir: str) -> list[str]:
    files = []
    for pattern in ORDER:
        files += sorted(p for p in glob.glob(os.path.join(results_dir, pattern)) if not p.endswith("-tiny-check.md"))
    return files


def section(results_dir: str) -> str:
    parts = [START, ""]
    files = results_files(results_dir)
    if not files:
        parts.append("No benchmark has been run yet.")
    for path in files:
        name = os.path.relpath(path, REPO)
        text = open(path, encoding="utf-8").read().strip()
        # Each results file's own headings go one level down, under "## Results".
        text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
        parts += [text, "", f"(from `{name}`)", ""]
    parts.append(END)
    return "\n".join(parts)


def render(readme: str, results_dir: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no results markers ({START} ... {END}).")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return before + section(results_dir) + after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args(argv)
    readme = open(args.readme, encoding="utf-8").read()
    rendered = render(readme, args.results)
    if args.check:
        if rendered != readme:
            print("README.md's Results section is stale: run python benchmarks/render_readme.py", file=sys.stderr)
            return 1
        return 0
    with open(args.readme, "w", encoding="utf-8") as f:
        f.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
