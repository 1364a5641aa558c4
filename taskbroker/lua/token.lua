-- token: a token's stored record, or false. A script only so that it goes out with the other
-- script calls of its event-loop turn (taskbroker.script_calls): a lone HGET through the client
-- cost a third of a client-token request's API CPU.
-- ARGV: prefix, token id
return redis.call('HGET', prefix .. ':tokens', ARGV[2])
