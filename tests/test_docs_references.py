"""The repository cites only documents and files it contains, and the text a user reads names no issue of the
project's tracker and no work session: a reader can follow every reference.

Checked in every text file the repository holds (code, documents, recipes, cards): each `*.md` document it names,
each path under one of its own top-level folders (`benchmarks/...`, `s2ca_hf/...`, `docs/...`, ...), and each
relative Markdown link. Placeholders (`<name>.md`, `$OUT/...`) are not paths; globs (`round*.md`, `{json,md}`) must
match a file.
"""

import glob
import os
import re
import subprocess
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]

# Files whose dangling references their owners are fixing in changes of their own; each entry says what it still
# cites. Remove an entry once its file is fixed (the list is meant to become empty).
ALLOWED_DANGLING: set[str] = set()

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg", ".ini", ".html", ""}
SKIPPED_FOLDERS = ("tests/fixtures/",)  # annotation files in each corpus's layout: data, not text
USER_FACING = ("README.md", "docs/", "hub_cards/template.md", "space/README.md", "metrics/text_video_retrieval/")
PATH_SUFFIXES = ("py", "md", "yaml", "yml", "json", "png", "sh", "txt", "toml", "csv")
# Not paths: placeholders (`<name>.md`, `$OUT`), f-string fields (`{name}.md`; a brace with commas is a glob).
PLACEHOLDER = re.compile(r"[<>$%\"']|\.\.\.|\{[^{},]*\}")


def repository_files() -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the list of the repository's files is git's")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return sorted(path for path in listed if (REPO / path).is_file())


def text_files(files: list[str]) -> list[str]:
    return [
        path
        for path in files
        if Path(path).suffix in TEXT_SUFFIXES
        and not path.startswith(SKIPPED_FOLDERS)
        and (Path(path).suffix or path.startswith(".ci/"))
    ]


def expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for option in match.group(1).split(",") for p in expand_braces(head + option + tail)]


def exists(reference: str, source: str, files: set[str]) -> bool:
    """Whether `reference` (named in the file `source`) is a file of the repository: relative to the repository, to
    the source's folder, or (a bare name or a partial path) as the tail of a repository path."""
    reference = reference.split("#", 1)[0].rstrip("/")
    if not reference:
        return True
    for pattern in expand_braces(reference):
        candidates = [REPO / pattern, REPO / Path(source).parent / pattern]
        if any(c.exists() for c in candidates) or any(glob.glob(str(c)) for c in candidates if "*" in pattern):
            continue
        tail = pattern.lstrip("./")
        if "*" in tail:
            if any(Path(path).match(tail) or Path(path).match("*/" + tail) for path in files):
                continue
            return False
        if tail in files or any(path.endswith("/" + tail) for path in files):
            continue
        return False
    return True


def references(text: str, top_folders: set[str], markdown: bool = True) -> set[str]:
    """The file references in `text`. In code (`markdown=False`) a lower-case bare name such as `msrvtt-test.md` is
    usually a file the code writes, so only document names (`README.md`, `METHOD.md`) and paths count there."""
    found = set()
    # Documents by name: METHOD.md, docs/method.md, results/accuracy.md, round1{2,3}.md, round*.md.
    for match in re.finditer(r"[\w./*{},-]*[\w*}]\.md\b", text):
        name = match.group(0)
        if markdown or "/" in name or re.fullmatch(r"[A-Z][A-Z0-9_-]*\.md", name):
            found.add(name)
    # Paths under the repository's own folders: benchmarks/results/x.json, s2ca_hf/retrieval/index.py.
    folders = "|".join(re.escape(folder) for folder in sorted(top_folders))
    suffixes = "|".join(PATH_SUFFIXES)
    for match in re.finditer(rf"(?<![\w/.-])(?:{folders})/[\w./*{{}},-]*\.(?:{suffixes})\b", text):
        found.add(match.group(0))
    # Relative Markdown links: [text](path).
    for match in re.finditer(r"\]\(([^)\s]+)\)", text) if markdown else ():
        if not re.match(r"[a-z]+:|#", match.group(1)):
            found.add(match.group(1))
    return {ref for ref in found if not PLACEHOLDER.search(ref) and not ref.startswith(("http", "//"))}


def dangling(path: str, files: set[str], top_folders: set[str]) -> list[str]:
    text = (REPO / path).read_text(encoding="utf-8", errors="replace")
    text = re.sub(r"https?://\S+", "", text)  # addresses are not repository paths
    markdown = Path(path).suffix == ".md"
    return sorted(ref for ref in references(text, top_folders, markdown) if not exists(ref, path, files))


def test_every_cited_document_and_path_exists():
    files = repository_files()
    listed = set(files)
    top_folders = {path.split("/", 1)[0] for path in files if "/" in path and not path.startswith(".")}
    problems = {}
    for path in text_files(files):
        if path in ALLOWED_DANGLING or path == "tests/test_docs_references.py":  # this file names missing ones
            continue
        missing = dangling(path, listed, top_folders)
        if missing:
            problems[path] = missing
    assert problems == {}


def test_the_checker_finds_what_it_should():
    top = {"benchmarks", "docs", "s2ca_hf"}
    files = {
        "docs/method.md",
        "benchmarks/results/accuracy.md",
        "benchmarks/results/diagnosis/s2ca_diagnosis_round1.md",
    }
    text = (
        "see METHOD.md and docs/method.md §5, `benchmarks/results/s2ca_diagnosis_round*.md`, "
        "benchmarks/results/diagnosis/s2ca_diagnosis_round{1,99}.md, [log](research-log.md), <name>.md, accuracy.md"
    )
    refs = references(text, top)
    missing = sorted(ref for ref in refs if not exists(ref, "docs/x.md", files))
    assert "METHOD.md" in missing and "benchmarks/results/s2ca_diagnosis_round*.md" in missing
    assert "benchmarks/results/diagnosis/s2ca_diagnosis_round{1,99}.md" in missing  # round99 is not there
    assert "docs/method.md" not in missing and "accuracy.md" not in missing
    assert not any("<" in ref for ref in refs)


def issue_numbers(text: str) -> list[str]:
    """`issue 12` and the like, except an issue of another repository named with it (`owner/repo issue #80`)."""
    return [
        text[max(0, match.start() - 40) : match.end()]
        for match in re.finditer(r"\bissues? #?\d+", text, flags=re.IGNORECASE)
        if not re.search(r"[\w.-]+/[\w.-]+ $", text[max(0, match.start() - 60) : match.start()])
    ]


def test_the_allow_list_names_only_files_that_still_need_it():
    """Once its owner has fixed a file, its entry goes (so that the list empties and nothing new hides behind it)."""
    files = repository_files()
    listed = set(files)
    top_folders = {path.split("/", 1)[0] for path in files if "/" in path and not path.startswith(".")}
    fixed = [
        path
        for path in sorted(ALLOWED_DANGLING)
        if path not in listed
        or not (dangling(path, listed, top_folders) or issue_numbers((REPO / path).read_text(encoding="utf-8")))
    ]
    assert fixed == [], "remove these from ALLOWED_DANGLING"


def test_user_facing_text_names_no_issue_and_no_session():
    """An issue of this project's tracker (`issue 12`) or a work session means nothing to a user; an issue of another
    repository, named with it (`ArrowLuo/CLIP4Clip issue #80`), can be followed."""
    problems = {}
    for path in repository_files():
        if not path.startswith(USER_FACING) or Path(path).suffix != ".md":
            continue
        text = (REPO / path).read_text(encoding="utf-8")
        for match in re.finditer(r"\b(?:issues? #?\d+|sessions?)\b", text, flags=re.IGNORECASE):
            before = text[max(0, match.start() - 60) : match.start()]
            if match.group(0).lower().startswith("issue") and re.search(r"[\w.-]+/[\w.-]+ $", before):
                continue
            problems.setdefault(path, []).append(text[max(0, match.start() - 40) : match.end() + 10])
    assert problems == {}


def test_no_issue_number_in_code_comments_and_docstrings_outside_the_allow_list():
    problems = {}
    for path in text_files(repository_files()):
        if path in ALLOWED_DANGLING or path.startswith(("benchmarks/results/", "tests/test_docs_references.py")):
            continue
        found = issue_numbers((REPO / path).read_text(encoding="utf-8", errors="replace"))
        if found:
            problems[path] = found
    assert problems == {}


@pytest.mark.parametrize("document", ["method.md", "datasets.md", "benchmarks.md", "research-log.md"])
def test_the_documents_exist(document):
    assert (REPO / "docs" / document).is_file()
    assert os.path.getsize(REPO / "docs" / document) > 1000
