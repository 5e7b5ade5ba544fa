module berth.dev/testbin/pause

go 1.26.0
