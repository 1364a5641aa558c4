-- renew: extend this consumer's leases; return the ids it no longer holds (aborted, timed out,
-- finished elsewhere or taken over) so the consumer cancels their runs.
-- ARGV: prefix, consumer, lease_until, id...
local consumer, lease_until = ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV do
  if not renew_lease(ARGV[i], consumer, lease_until) then lost[#lost + 1] = ARGV[i] end
end
return lost
