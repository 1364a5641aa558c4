-- discard: remove tasks whose messages could not be published, so a refused request leaves
-- nothing behind. Only pending tasks are touched.
-- ARGV: prefix, id...
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'scheduler')
  if fields[1] == 'pending' then
    release_idempotency_key(id)
    redis.call('DEL', key)
    redis.call('ZREM', deadlines, id)
    redis.call('SREM', live_key(fields[2]), id)
  end
end
return 'ok'
