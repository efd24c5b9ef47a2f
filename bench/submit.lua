-- wrk script: POST /operations?wait=true, a deposit with a fresh op_id on every request.
-- wrk -s bench/submit.lua http://127.0.0.1:PORT -- TAG USERS
-- Each wrk thread numbers its own requests; TAG keeps op_ids apart across runs.

local threads = 0

function setup(thread)
    threads = threads + 1
    thread:set("thread_number", threads)
end

function init(args)
    tag = args[1] or "wrk"
    users = tonumber(args[2] or "10000")
    sent = 0
end

function request()
    sent = sent + 1
    local user = 1000000 + (sent * 7919 + thread_number * 104729) % users
    local body = string.format(
        '{"op_id":"%s-%d-%d","kind":"deposit","user_id":%d,"asset":1,"amount":1}',
        tag, thread_number, sent, user
    )
    return wrk.format("POST", "/operations?wait=true", { ["Content-Type"] = "application/json" }, body)
end
