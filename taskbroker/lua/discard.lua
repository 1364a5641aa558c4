-- discard: remove tasks whose messages could not be published, so a refused request leaves
-- nothing behind. Only pending tasks are touched.
-- ARGV: prefix, id...
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = task_key(id)
  local fields = redis.call('HMGET', key, 'state', 'scheduler', 'events')
  if fields[1] == 'pending' then
    release_idempotency_key(id)
    -- The task never existed for anyone: its `pending` event goes too.
    for event_id in string.gmatch(fields[3] or '', '%S+') do redis.call('XDEL', events, event_id) end
    redis.call('DEL', key)
    redis.call('ZREM', deadlines, id)
    redis.call('SREM', live_key(fields[2]), id)
  end
end
return 'ok'
