-- schedule_retake: take over firing records older than a cutoff (their firer died or could not
-- reach RabbitMQ), renewing their time so one process at a time retries each.
-- ARGV: prefix, cutoff, now, limit. Returns task id, record, task id, record, ...
local cutoff, now, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local firing = prefix .. ':schedule_firing'
local out = {}
for _, task_id in ipairs(redis.call('ZRANGEBYSCORE', firing .. '_since', '-inf', cutoff, 'LIMIT', 0, limit)) do
  local record = redis.call('HGET', firing, task_id)
  if record then
    redis.call('ZADD', firing .. '_since', now, task_id)
    table.insert(out, task_id)
    table.insert(out, record)
  else
    redis.call('ZREM', firing .. '_since', task_id)
  end
end
return out
