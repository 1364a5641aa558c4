-- renew: extend this consumer's leases; return the ids it no longer holds (aborted, timed out,
-- finished elsewhere or taken over) so the consumer cancels their runs.
-- ARGV: prefix, consumer, lease_until, id...
local consumer, lease_until = ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'lease_owner')
  if fields[1] == 'running' and fields[2] == consumer then
    redis.call('HSET', key, 'lease_until', lease_until)
    redis.call('ZADD', leases, lease_until, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
