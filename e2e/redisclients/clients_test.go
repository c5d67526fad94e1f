// Package redisclients measures the two Go Redis clients the shared store
// could use, against a real redis-server it starts on a loopback port: a
// round trip, a pipelined write and a client-side cache hit, with 32
// concurrent callers (as the gRPC streams of a busy Envoy). It is its own
// module so that the product does not depend on the client it did not pick.
//
//	cd e2e/redisclients && go test -run "^$" -bench . -benchmem -count 3
package redisclients

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

var addr string

func TestMain(m *testing.M) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr = "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "redis-server (apt-get install redis-server):", err)
		os.Exit(1)
	}
	for i := 0; i < 250; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	code := m.Run()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	os.Exit(code)
}

const keys = 10000

func key(i int) string { return fmt.Sprintf("bench:b:pool:h:%d", i%keys) }

func BenchmarkClients(b *testing.B) {
	ctx := context.Background()
	ru, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer ru.Close()
	gr := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: 3})
	defer gr.Close()
	grc := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: 3, ClientSideCacheConfig: &goredis.CacheConfig{MaxEntries: 100000}})
	defer grc.Close()
	for i := 0; i < keys; i++ {
		gr.Set(ctx, key(i), "host-"+strconv.Itoa(i%7), time.Hour)
	}
	b.Run("get/rueidis", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if err := ru.Do(ctx, ru.B().Get().Key(key(i)).Build()).Error(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("get/go-redis", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if err := gr.Get(ctx, key(i)).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("set+pexpire-pipelined/rueidis", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				k := key(i)
				for _, r := range ru.DoMulti(ctx, ru.B().Set().Key(k).Value("host-1").Px(time.Hour).Build(), ru.B().Pexpire().Key(k).Milliseconds(3600000).Build()) {
					if r.Error() != nil {
						b.Fatal(r.Error())
					}
				}
			}
		})
	})
	b.Run("set+pexpire-pipelined/go-redis", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				k := key(i)
				_, err := gr.Pipelined(ctx, func(p goredis.Pipeliner) error {
					p.Set(ctx, k, "host-1", time.Hour)
					p.PExpire(ctx, k, time.Hour)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("cache-hit/rueidis", func(b *testing.B) {
		for i := 0; i < keys; i++ {
			ru.DoCache(ctx, ru.B().Get().Key(key(i)).Cache(), time.Minute)
		}
		b.ResetTimer()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				r := ru.DoCache(ctx, ru.B().Get().Key(key(i)).Cache(), time.Minute)
				if r.Error() != nil {
					b.Fatal(r.Error())
				}
			}
		})
		b.StopTimer()
		r := ru.DoCache(ctx, ru.B().Get().Key(key(1)).Cache(), time.Minute)
		if !r.IsCacheHit() {
			b.Fatal("no cache hit")
		}
	})
	b.Run("cache-hit/go-redis", func(b *testing.B) {
		for i := 0; i < keys; i++ {
			grc.Get(ctx, key(i))
		}
		b.ResetTimer()
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if err := grc.Get(ctx, key(i)).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
