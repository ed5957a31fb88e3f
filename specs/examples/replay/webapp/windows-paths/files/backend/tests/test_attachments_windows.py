"""Attachment names on NTFS. The store runs against a directory on the Windows drive when
there is one (WINDOWS_ATTACHMENTS_DIR, or /mnt/c/tmp under WSL), else a temporary directory:
the names it makes do not depend on the file system being case-insensitive.
"""

import os
import shutil
import uuid
from pathlib import Path, PureWindowsPath

import pytest
from backend.app.attachments import MAX_PATH, AttachmentStore, fit_name, safe_name


@pytest.fixture
def root(tmp_path):
    windows = Path(os.environ.get("WINDOWS_ATTACHMENTS_DIR", "/mnt/c/tmp"))
    if not (windows.is_dir() and os.access(windows, os.W_OK)):
        yield tmp_path
        return
    root = windows / f"attachments-test-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("report.pdf", "report.pdf"),
        (r"C:\Users\ada\Desktop\plan.txt", "plan.txt"),
        ("a<b>c:d|e?f*.txt", "a_b_c_d_e_f_.txt"),
        ("notes. . ", "notes"),
        ("CON", "_CON"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("com1 .txt", "_com1 .txt"),
        ("console.txt", "console.txt"),
        ("tab\there.txt", "tab_here.txt"),
        ("...", "attachment"),
    ],
)
def test_safe_name(given, expected):
    assert safe_name(given) == expected


def test_a_long_name_is_cut_to_the_path_limit_keeping_its_extension():
    folder = PureWindowsPath(r"C:\data\attachments\task-7")
    name = fit_name(folder, "x" * 300 + ".docx")
    assert len(str(folder / name)) == MAX_PATH
    assert name.endswith("xxx.docx")
    assert len(str(folder / fit_name(folder, "x" * 300 + ".docx", n=12))) == MAX_PATH


def test_a_folder_too_deep_for_any_name_is_refused():
    with pytest.raises(ValueError, match="no room"):
        fit_name(PureWindowsPath("C:\\" + "d" * 240), "a.txt")


def test_names_are_unique_case_insensitively(root):
    store = AttachmentStore(root)
    first = store.save(7, "Report.PDF", b"v1")
    second = store.save(7, "report.pdf", b"v2")
    third = store.save(7, r"C:\scans\REPORT.pdf", b"v3")
    assert [first.name, second.name, third.name] == [
        "Report.PDF",
        "report (2).pdf",
        "REPORT (3).pdf",
    ]
    assert first.read_bytes() == b"v1"
    assert store.names(7) == sorted(["Report.PDF", "report (2).pdf", "REPORT (3).pdf"])
    assert store.names(8) == []


def test_stored_paths_fit_the_limit(root):
    store = AttachmentStore(root, max_path=len(str(root)) + 40)
    path = store.save(1, "quarterly-report-" + "q" * 100 + ".xlsx", b"")
    assert len(str(path)) <= store.max_path
    assert path.suffix == ".xlsx"
    assert store.save(1, "quarterly-report-" + "q" * 100 + ".xlsx", b"").name.endswith(" (2).xlsx")
