"""The CI's junit files: ``merge DIR`` joins DIR/junit-*.xml into DIR/junit.xml and prints a JSON
summary; ``report DIR`` writes the failures of DIR/junit.xml to DIR/failures.md and prints it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.etree import ElementTree


def merge(folder: Path) -> None:
    shards = sorted(folder.glob("junit-*.xml"))
    merged = ElementTree.Element("testsuites")
    for path in shards:
        merged.extend(ElementTree.parse(path).getroot().iter("testsuite"))
    ElementTree.ElementTree(merged).write(folder / "junit.xml", encoding="utf-8")
    cases = list(merged.iter("testcase"))
    failed = [name for name, _ in failures(merged)]
    print(json.dumps({"shards": len(shards), "tests": len(cases), "failed": failed}))


def report(folder: Path) -> None:
    found = failures(ElementTree.parse(folder / "junit.xml").getroot())
    lines = ["# Failed tests", *(f"- {name}: {message}" for name, message in found)]
    (folder / "failures.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def failures(root: ElementTree.Element) -> list[tuple[str, str]]:
    found = []
    for case in root.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            name = f"{case.get('classname')}.{case.get('name')}"
            found.append((name, (problem.get("message") or "").split("\n")[0]))
    return found


if __name__ == "__main__":
    {"merge": merge, "report": report}[sys.argv[1]](Path(sys.argv[2]))
