-- wrk script for bench/compare.py's cold misses: every request asks for a path nobody has
-- asked for before, so every request is a miss that the cache must fetch and store.
--   wrk -s bench/unique_paths.lua http://127.0.0.1:PORT -- /cold/run1-
-- Each wrk thread has a Lua state of its own: the thread number keeps their paths apart,
-- the argument (a prefix unique to the run) keeps runs apart.

local threads = 0

function setup(thread)
   thread:set("thread_number", threads)
   threads = threads + 1
end

local prefix = "/cold/"
local counter = 0

function init(args)
   if args[1] ~= nil then
      prefix = args[1]
   end
end

function request()
   counter = counter + 1
   return wrk.format("GET", prefix .. thread_number .. "-" .. counter .. ".bin")
end
