// fake-gcs-server with the XML API writes that obstore (the object_store crate) uses on GCS:
// a plain PUT /BUCKET/OBJECT (conditional with x-goog-if-generation-match: 0) and the
// multipart upload (POST ?uploads, PUT ?partNumber&uploadId, POST ?uploadId, DELETE
// ?uploadId). fake-gcs-server v1.56.1 implements the XML API's reads, lists and deletes
// but none of these writes; everything else is its own handler, unchanged. Parts are kept
// in memory until the upload completes, so an object is visible only once it is whole, as
// on GCS.
package main

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

type upload struct {
	bucket, name string
	parts        map[int][]byte
}

type bridge struct {
	server  *fakestorage.Server
	next    http.Handler
	mu      sync.Mutex
	uploads map[string]*upload
	counter int
}

func etag(data []byte) string {
	sum := md5.Sum(data)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// split returns the bucket and object of a path-style XML API URL.
func split(path string) (string, string, bool) {
	parts := strings.SplitN(strings.TrimPrefix(path, "/"), "/", 2)
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

func (b *bridge) store(w http.ResponseWriter, r *http.Request, bucket, name string, data []byte, complete bool) {
	if r.Header.Get("x-goog-if-generation-match") == "0" {
		if _, err := b.server.GetObject(bucket, name); err == nil {
			w.WriteHeader(http.StatusPreconditionFailed)
			fmt.Fprint(w, "<Error><Code>PreconditionFailed</Code></Error>")
			return
		}
	}
	obj := fakestorage.Object{
		ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name},
		Content:     data,
	}
	if err := b.server.CreateObjectStreaming(obj.StreamingObject()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("ETag", etag(data))
	w.WriteHeader(http.StatusOK)
	if complete {
		fmt.Fprintf(w, "<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"+
			"<ETag>%s</ETag></CompleteMultipartUploadResult>", bucket, name, etag(data))
	}
}

func (b *bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	bucket, name, ok := split(r.URL.Path)
	if !ok || query.Get("uploadType") != "" || strings.HasPrefix(r.URL.Path, "/storage/") ||
		strings.HasPrefix(r.URL.Path, "/upload/") {
		b.next.ServeHTTP(w, r)
		return
	}
	_, uploads := query["uploads"]
	uploadID := query.Get("uploadId")
	switch {
	case r.Method == http.MethodPost && uploads:
		b.mu.Lock()
		b.counter++
		id := strconv.Itoa(b.counter)
		b.uploads[id] = &upload{bucket: bucket, name: name, parts: map[int][]byte{}}
		b.mu.Unlock()
		fmt.Fprintf(w, "<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"+
			"<UploadId>%s</UploadId></InitiateMultipartUploadResult>", bucket, name, id)
	case r.Method == http.MethodPut && uploadID != "":
		number, err := strconv.Atoi(query.Get("partNumber"))
		data, readErr := io.ReadAll(r.Body)
		b.mu.Lock()
		u := b.uploads[uploadID]
		if u != nil && err == nil && readErr == nil {
			u.parts[number] = data
		}
		b.mu.Unlock()
		if u == nil || err != nil || readErr != nil {
			http.Error(w, "<Error><Code>NoSuchUpload</Code></Error>", http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", etag(data))
	case r.Method == http.MethodPost && uploadID != "":
		var complete struct {
			Parts []struct {
				PartNumber int `xml:"PartNumber"`
			} `xml:"Part"`
		}
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		u := b.uploads[uploadID]
		delete(b.uploads, uploadID)
		b.mu.Unlock()
		if u == nil || xml.Unmarshal(body, &complete) != nil {
			http.Error(w, "<Error><Code>NoSuchUpload</Code></Error>", http.StatusNotFound)
			return
		}
		sort.Slice(complete.Parts, func(i, j int) bool {
			return complete.Parts[i].PartNumber < complete.Parts[j].PartNumber
		})
		var data []byte
		for _, part := range complete.Parts {
			data = append(data, u.parts[part.PartNumber]...)
		}
		b.store(w, r, bucket, name, data, true)
	case r.Method == http.MethodDelete && uploadID != "":
		b.mu.Lock()
		delete(b.uploads, uploadID)
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut:
		data, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.store(w, r, bucket, name, data, false)
	default:
		b.next.ServeHTTP(w, r)
	}
}

// unfinished answers how many multipart uploads are open (for the tests' abort check).
func (b *bridge) unfinished(w http.ResponseWriter, _ *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprint(w, len(b.uploads))
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 4443, "port to listen on")
	flag.Parse()
	address := fmt.Sprintf("%s:%d", *host, *port)
	server, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		NoListener: true,
		PublicHost: address,
		Scheme:     "http",
		Host:       *host,
		Port:       uint16(*port),
	})
	if err != nil {
		log.Fatal(err)
	}
	b := &bridge{server: server, next: server.HTTPHandler(), uploads: map[string]*upload{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/_bridge/unfinished", b.unfinished)
	mux.Handle("/", b)
	log.Fatal(http.ListenAndServe(address, mux))
}
