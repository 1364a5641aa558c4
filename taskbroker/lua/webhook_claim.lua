-- webhook_claim: take due webhook deliveries under a short claim: each one's due time moves to
-- the end of the claim, so another dispatcher does not POST it meanwhile, and a dispatcher that
-- dies mid-POST leaves it due again once the claim runs out. Counts the attempt on the task.
-- ARGV: prefix, now, claim_until, limit
local webhooks = prefix .. ':webhooks'
local ids = redis.call('ZRANGE', webhooks, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local key = task_key(id)
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', webhooks, ARGV[3], id)
    redis.call('HINCRBY', key, 'webhook_attempts', 1)
    out[#out + 1] = task_record(id)
  else
    -- The task outlived its retention before delivery: nothing left to send.
    redis.call('ZREM', webhooks, id)
    out[#out + 1] = id
  end
end
return out
