"""``triphase web``: a read-mostly, server-rendered console over the audit database.

Everything shown is read from the database (:mod:`db.queries`), the model artifacts and the
evaluation reports; the only writes are the two token-protected actions, made through
:class:`db.repository.Repository` exactly as the command line makes them, and audited.
"""
