-- == privileges of approvals (after 80_privileges, which revokes PUBLIC's) =====================
-- Reviewing and listing check who is asking themselves (session_user against the policy's
-- reviewers, pgwarden_admin, the requester), so everyone may call them; expiring is a pure
-- function of time. _approval_request is for the autonomous (superuser) session only.

GRANT EXECUTE ON FUNCTION pgwarden.approve(bigint, text, text),
  pgwarden.deny(bigint, text, text), pgwarden.approval_requests(text, bigint),
  pgwarden.expire_approvals() TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgwarden.approval_outbox(text[], integer),
  pgwarden.approval_delivered(bigint, text, boolean, integer, text, double precision),
  pgwarden.notify_status(text[]) TO pgwarden_admin;
