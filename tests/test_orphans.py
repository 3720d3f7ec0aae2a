import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("parent, alive", [("os.getppid()", True), ("1", False)])
def test_a_child_whose_parent_is_already_gone_exits(parent, alive):
    code = ("import os; from llmbench.core.orphans import die_with_parent; "
            f"die_with_parent({parent}); print('alive')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert (proc.returncode, proc.stdout) == ((0, "alive\n") if alive else (1, ""))
