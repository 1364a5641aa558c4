-- lapsed: running tasks whose lease has run out, with their schedulers (read only).
-- ARGV: prefix, now, limit
local ids = redis.call('ZRANGE', leases, '-inf', ARGV[2], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local scheduler = redis.call('HGET', task_key(id), 'scheduler')
  if scheduler then
    out[#out + 1] = id
    out[#out + 1] = scheduler
  else
    redis.call('ZREM', leases, id)
  end
end
return out
