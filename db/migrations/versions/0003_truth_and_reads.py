"""truth_labels and reader_reads: ground truth and readers' reads imported for evaluation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:29:02.427793
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reader_reads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_id', sa.String(length=64), nullable=False),
    sa.Column('reader_group', sa.String(length=32), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('lesion_id', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=32), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=True),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.Column('import_file', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reader_reads')),
    sa.UniqueConstraint('reader_id', 'study_uid', 'lesion_id', name='uq_reader_reads_reader_lesion')
    )
    with op.batch_alter_table('reader_reads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reader_reads_reader_group'), ['reader_group'], unique=False)
        batch_op.create_index(batch_op.f('ix_reader_reads_study_uid'), ['study_uid'], unique=False)

    op.create_table('truth_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=True),
    sa.Column('lesion_id', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=True),
    sa.Column('center_x_mm', sa.Double(), nullable=True),
    sa.Column('center_y_mm', sa.Double(), nullable=True),
    sa.Column('center_z_mm', sa.Double(), nullable=True),
    sa.Column('size_mm', sa.Double(), nullable=True),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.Column('import_file', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_truth_labels')),
    sa.UniqueConstraint('study_uid', 'lesion_id', name='uq_truth_labels_study_lesion')
    )
    with op.batch_alter_table('truth_labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_truth_labels_patient_id'), ['patient_id'], unique=False)

def downgrade() -> None:
    with op.batch_alter_table('truth_labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_truth_labels_patient_id'))

    op.drop_table('truth_labels')
    with op.batch_alter_table('reader_reads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reader_reads_study_uid'))
        batch_op.drop_index(batch_op.f('ix_reader_reads_reader_group'))

    op.drop_table('reader_reads')
