"""LaborNet shared platform library.

Only what every service really shares lives here: settings, the province registry, identifier
validation, the signed CloudEvents envelope, the transactional outbox, the idempotent inbox
consumer, auth, observability and problem details. No service's domain model belongs here.
"""
