"""Build hook: compile ``src/stepline/runners/_briefc.c``, the one C module, where a compiler is.

stepline is pure Python without it: the module only makes a short ``run`` step's start cheaper
(NOTES.md, Performance, "Session 11"), and ``runners/_spawn.py`` falls back to the Python start
wherever it is missing. So a failed compile is a warning, never a failed install, and
``STEPLINE_NO_C=1`` skips it. The compile is one ``cc`` call with the interpreter's own flags
(``sysconfig``), as ``setuptools`` would run it, without a ``setup.py``.

An editable install (``pip install -e .``) puts the module beside its source, where the
editable path finds it (``.gitignore`` keeps it out of git); a wheel carries it and is tagged
for this interpreter and platform.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/stepline/runners/_briefc.c")
MODULE = "stepline/runners/_briefc"


class BriefCBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("STEPLINE_NO_C"):
            return
        name = MODULE + sysconfig.get_config_var("EXT_SUFFIX")
        if version == "editable":
            target = Path(self.root) / "src" / name
            if self._compile(target):
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
            return
        self._scratch = tempfile.mkdtemp(prefix="stepline-build-")  # gone in finalize
        built = Path(self._scratch) / Path(name).name
        if self._compile(built):
            build_data["force_include"][str(built)] = name
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """The wheel holds its copy of the module now: remove the scratch directory."""
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def _compile(self, target: Path) -> bool:
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        flags = shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC")
        include = sysconfig.get_paths()["include"]
        argv = [*cc, "-O2", "-shared", *flags, f"-I{include}", str(Path(self.root) / SOURCE)]
        argv += ["-o", str(target)]
        try:
            subprocess.run(argv, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            self.app.display_warning(
                f"stepline: {SOURCE} not compiled ({exc}); the Python start is used.\n"
                + detail.decode(errors="replace")
            )
            return False
        return True
