-- discard: remove tasks whose messages could not be published, so a refused request leaves
-- nothing behind (its delayed tasks too). Only pending and delayed tasks are touched, and only those no one else has published
-- since: a repeat of the task's idempotency key, or the timeout daemon's reconciliation, may
-- have published and confirmed it meanwhile (and told its caller of it).
-- ARGV: prefix, id...
for i = 2, #ARGV do
  local id = ARGV[i]
  local task = read_task(id)
  if task and (task.state == 'pending' or task.state == 'delayed')
      and redis.call('HGET', task_key(id), 'published') ~= '1' then
    if task.state == 'delayed' then undelay(task) end
    release_idempotency_key(task)
    -- The task never existed for anyone: its `pending` event goes too.
    for event_id in string.gmatch(task.events or '', '%S+') do redis.call('XDEL', events, event_id) end
    redis.call('DEL', task_key(id), attributes_key(id))
    redis.call('ZREM', deadlines, id)
    redis.call('ZREM', unclaimed, id)
    redis.call('SREM', live_key(task.scheduler), id)
  end
end
return 'ok'
