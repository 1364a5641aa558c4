-- schedule_delete: remove a schedule, its name and its run history. A run already claimed keeps
-- its firing record (it holds everything needed), so a deletion never strands a half-made task.
-- ARGV: prefix, id
local id = ARGV[2]
local key = prefix .. ':schedule:' .. id
local name = redis.call('HGET', key, 'name')
if not name then return 'gone' end
redis.call('HDEL', prefix .. ':schedule_names', name)
redis.call('ZREM', prefix .. ':schedule_due', id)
redis.call('DEL', key, key .. ':runs')
return 'ok'
