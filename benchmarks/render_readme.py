"""Writes the README's "Results" section and its default-run table from the committed results files, so that no
figure there is typed by hand.

python benchmarks/render_readme.py          # rewrite README.md between the results markers
python benchmarks/render_readme.py --check  # exit 1 if README.md is not what the results files give
"""

import argparse
import glob
import os
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- results:start (benchmarks/render_readme.py) -->", "<!-- results:end -->"
RUN_START, RUN_END = "<!-- default-run:start (benchmarks/render_readme.py) -->", "<!-- default-run:end -->"
DEFAULT_RUN = "default_run.md"  # shown in the Training section, not under Results
ORDER = ("accuracy.md", "s2ca_diagnosis_round*.md", "gpu_throughput-*.md", "data_pipeline.md", "search.md")


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
        figures = [
            f"[{label}]({os.path.relpath(figure, REPO)})"
            for label, suffix in (("R@K curves", "_recall.png"), ("concept usage", "_concepts.png"))
            if os.path.isfile(figure := path[: -len(".md")] + suffix)
        ]
        if figures:
            parts += ["Figures: " + ", ".join(figures) + " (`benchmarks/figures.py`).", ""]
    parts.append(END)
    return "\n".join(parts)


def default_run_section(results_dir: str) -> str:
    path = os.path.join(results_dir, DEFAULT_RUN)
    lines = open(path, encoding="utf-8").read().strip().splitlines()[1:]  # without its title
    return "\n".join([RUN_START, *lines, "", f"(from `{os.path.relpath(path, REPO)}`)", RUN_END])


def replace_between(text: str, start: str, end: str, content: str) -> str:
    if start not in text or end not in text:
        raise ValueError(f"README.md has no markers {start} ... {end}.")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + content + after


def render(readme: str, results_dir: str) -> str:
    readme = replace_between(readme, START, END, section(results_dir))
    if os.path.isfile(os.path.join(results_dir, DEFAULT_RUN)):
        readme = replace_between(readme, RUN_START, RUN_END, default_run_section(results_dir))
    return readme


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
