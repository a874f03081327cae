"""Associations with peers: accepted, closed, rejected, and those a crash left open."""

from __future__ import annotations

from sqlalchemy import select, update

from db.repository.base import RepositoryBase, add_event
from db.schema import Association, utcnow
from db.vocabulary import AssociationResult, Severity


class AssociationWrites(RepositoryBase):
    def open_association(
        self, *, calling_ae: str, called_ae: str, address: str, port: int | None, peer_name: str | None
    ) -> int:
        with self.db.session() as session:
            row = Association(
                calling_ae=calling_ae, called_ae=called_ae, address=address, port=port, peer_name=peer_name
            )
            session.add(row)
            session.flush()
            add_event(session, "association.accepted", f"from {calling_ae}", association_id=row.id,
                      detail={"calling_ae": calling_ae, "address": address, "peer": peer_name})
            return row.id

    def close_association(
        self, association_id: int, *, result: AssociationResult, stored: int, failed: int, bytes_stored: int,
        detail: str | None = None,
    ) -> None:
        clean = result == AssociationResult.RELEASED and not failed
        with self.db.session() as session:
            session.execute(
                update(Association).where(Association.id == association_id).values(
                    ended_at=utcnow(), result=result, instances_stored=stored, instances_failed=failed,
                    bytes_stored=bytes_stored, detail=detail,
                )
            )
            add_event(session, f"association.{result}", f"{stored} stored, {failed} refused",
                      severity=Severity.INFO if clean else Severity.WARNING, association_id=association_id,
                      detail={"stored": stored, "failed": failed, "bytes": bytes_stored})

    def reject_association(
        self, *, calling_ae: str, called_ae: str, address: str, port: int | None, reason: str
    ) -> int:
        with self.db.session() as session:
            now = utcnow()
            row = Association(calling_ae=calling_ae, called_ae=called_ae, address=address, port=port,
                              started_at=now, ended_at=now, result=AssociationResult.REJECTED, detail=reason)
            session.add(row)
            session.flush()
            add_event(session, "association.rejected", reason, severity=Severity.WARNING, association_id=row.id,
                      detail={"calling_ae": calling_ae, "address": address})
            return row.id

    def close_interrupted_associations(self) -> int:
        """At start-up: associations left open by a crash are marked interrupted."""
        with self.db.session() as session:
            ids = session.scalars(select(Association.id).where(Association.result == AssociationResult.OPEN)).all()
            for association_id in ids:
                session.execute(update(Association).where(Association.id == association_id)
                                .values(result=AssociationResult.INTERRUPTED, ended_at=utcnow()))
                add_event(session, "association.interrupted", "node stopped during the association",
                          severity=Severity.WARNING, association_id=association_id)
            return len(ids)
