-- expire: live tasks past their timeout -> timeout. Reads only the due slice of the deadline
-- index, so a sweep costs O(expired), and runs atomically, so concurrent daemons never expire
-- the same task twice.
-- ARGV: prefix, now, limit, retention_ms
local ids = redis.call('ZRANGE', deadlines, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local fields = redis.call('HMGET', task_key(id), 'state', 'attempts', 'lease_owner')
  local state = fields[1]
  if state == 'pending' or state == 'running' then
    local scheduler = finalize(id, 'timeout', ARGV[2], ARGV[4], false, 'timed out')
    out[#out + 1] = id
    out[#out + 1] = scheduler
    out[#out + 1] = state
    out[#out + 1] = fields[2] or '0'
    out[#out + 1] = fields[3] or ''
  else
    redis.call('ZREM', deadlines, id)
  end
end
return out
