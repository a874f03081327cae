"""labels.csv and reads.csv imports: validated, line-numbered errors, all or nothing, audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.queries import audit_events
from db.repository import Repository
from db.schema import ReaderRead, TruthLabel
from tests.evaluation.conftest import LABEL_HEADER, READ_HEADER, add_study, study_uid, write_csv
from worker.evaluation.imports import ImportRejectedError, import_file


def count(database: Database, model: type) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_good_files_import_with_audit(repository: Repository, database: Database, tmp_path: Path) -> None:
    add_study(repository, 0, patient="P0", accession="A0")
    add_study(repository, 1, patient="P1", accession="A1")
    labels = write_csv(tmp_path / "labels.csv", LABEL_HEADER, [
        ["P0", study_uid(0), "A0", "L1", "early_hcc", "pathology", 1, 2, 3, 12.5],
        ["P1", "", "A1", "L1", "progressed_hcc", "pathology", "", "", "", ""],  # found by accession number
    ])
    assert import_file("truth", labels, repository, task="mri-ehcc") == 2
    reads = write_csv(tmp_path / "reads.csv", READ_HEADER, [
        ["R1", "general", "P0", study_uid(0), "L1", "early_hcc", 0.7],
        ["R1", "general", "P1", study_uid(1), "L1", "early_hcc", ""],
    ])
    assert import_file("reads", reads, repository) == 2
    with database.session() as session:
        by_accession = session.scalars(select(TruthLabel).where(TruthLabel.patient_id == "P1")).one()
        assert by_accession.study_uid == study_uid(1) and by_accession.size_mm is None
        assert session.scalars(select(ReaderRead.confidence).order_by(ReaderRead.id)).all() == [0.7, None]
    kinds = [e.kind for e in audit_events(database)]
    assert "truth.imported" in kinds and "reads.imported" in kinds


def test_bad_truth_is_rejected_with_line_numbers_and_nothing_written(repository: Repository, database: Database,
                                                                      tmp_path: Path) -> None:
    add_study(repository, 0, patient="P0")
    labels = write_csv(tmp_path / "labels.csv", LABEL_HEADER, [
        ["P0", study_uid(0), "", "L1", "early_hcc", "pathology", 1, 2, 3, 10],  # line 2: fine
        ["P0", study_uid(0), "", "L2", "hcc_maybe", "pathology", 1, 2, 3, 10],  # 3: unknown label
        ["P9", "1.2.3.999", "", "L1", "early_hcc", "pathology", 1, 2, 3, 10],  # 4: unknown study
        ["P0", study_uid(0), "", "L1", "early_hcc", "pathology", 1, 2, 3, 10],  # 5: duplicate of line 2
        ["P0", study_uid(0), "", "L3", "early_hcc", "pathology", "x", 2, 3, -1],  # 6: not a number, negative size
        ["PZ", study_uid(0), "", "L4", "early_hcc", "pathology", 1, 2, 3, 10],  # 7: patient differs
        ["P0", "", "", "L5", "early_hcc", "pathology", 1, 2, 3, 10],  # 8: no study reference
    ])
    with pytest.raises(ImportRejectedError) as caught:
        import_file("truth", labels, repository, task="mri-ehcc")
    errors = [str(e) for e in caught.value.errors]
    assert [e.line for e in caught.value.errors] == [3, 4, 5, 6, 6, 7, 8]
    assert "unknown label 'hcc_maybe'" in errors[0]
    assert "unknown study 1.2.3.999" in errors[1]
    assert "duplicate of line 2" in errors[2]
    assert "not a number" in errors[3] and "outside" in errors[4]
    assert "differs from the study's 'P0'" in errors[5]
    assert "neither study_uid nor accession_number" in errors[6]
    assert count(database, TruthLabel) == 0
    assert [e.kind for e in audit_events(database, kind_prefix="truth.")] == ["truth.import_rejected"]


def test_missing_columns_and_ragged_rows(repository: Repository, tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    missing.write_text("patient_id,study_uid,lesion_id\nP0,1.2,L1\n")
    with pytest.raises(ImportRejectedError, match="line 1: missing column"):
        import_file("truth", missing, repository)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",".join(READ_HEADER) + "\nR1,general,P0,1.2,L1,early_hcc,0.5,extra\n")
    with pytest.raises(ImportRejectedError, match="line 2: expected 7 fields"):
        import_file("reads", ragged, repository)


def test_reimport_is_a_duplicate_unless_replaced(repository: Repository, database: Database, tmp_path: Path) -> None:
    add_study(repository, 0, patient="P0")
    row = ["P0", study_uid(0), "", "L1", "early_hcc", "pathology", "", "", "", ""]
    first = write_csv(tmp_path / "first.csv", LABEL_HEADER, [row])
    import_file("truth", first, repository)
    second = write_csv(tmp_path / "second.csv", LABEL_HEADER, [
        ["P0", study_uid(0), "", "L2", "early_hcc", "pathology", "", "", "", ""],
        row[:4] + ["progressed_hcc"] + row[5:]])
    with pytest.raises(ImportRejectedError) as caught:
        import_file("truth", second, repository)
    assert [str(e) for e in caught.value.errors] == [f"line 3: already imported ({study_uid(0)}, L1); "
                                                     "--replace replaces it"]
    assert count(database, TruthLabel) == 1  # L2 was not half-imported
    import_file("truth", second, repository, replace=True)
    with database.session() as session:
        assert sorted(session.execute(select(TruthLabel.lesion_id, TruthLabel.label)).all()) == [
            ("L1", "progressed_hcc"), ("L2", "early_hcc")]


def test_reads_need_known_lesions_and_valid_confidence(repository: Repository, database: Database,
                                                       tmp_path: Path) -> None:
    add_study(repository, 0, patient="P0")
    import_file("truth", write_csv(tmp_path / "labels.csv", LABEL_HEADER, [
        ["P0", study_uid(0), "", "L1", "early_hcc", "pathology", "", "", "", ""]]), repository)
    reads = write_csv(tmp_path / "reads.csv", READ_HEADER, [
        ["R1", "general", "P0", study_uid(0), "L1", "early_hcc", 1.5],  # 2: confidence out of range
        ["R1", "general", "P0", study_uid(0), "L9", "early_hcc", 0.5],  # 3: lesion without truth
        ["R1", "general", "P0", "1.2.3.4", "L1", "early_hcc", 0.5],  # 4: unknown study
        ["R2", "", "P0", study_uid(0), "L1", "early_hcc", 0.5],  # 5: empty group
        ["R3", "general", "P0", study_uid(0), "L1", "early_hcc", 0.5],  # 6: fine
        ["R3", "general", "P0", study_uid(0), "L1", "progressed_hcc", 0.5],  # 7: duplicate
    ])
    with pytest.raises(ImportRejectedError) as caught:
        import_file("reads", reads, repository)
    assert [e.line for e in caught.value.errors] == [2, 3, 4, 5, 7]
    assert count(database, ReaderRead) == 0
