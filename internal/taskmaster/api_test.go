package taskmaster

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAPIAuthenticationErrors(t *testing.T) {
	tests := []struct {
		name           string
		authorization  []string // one element per header line
		wantMessage    string
		wantChallenge  string
		wantAPICounted int64
	}{
		{"header missing", nil, "Authorization header missing", "Bearer", 1},
		{"header empty", []string{""}, "Authorization header missing", "Bearer", 1},
		{"basic scheme", []string{basicAuth(testClientID, testClientSecret)}, "Invalid Authorization header format", `Bearer error="invalid_request"`, 1},
		{"lowercase scheme", []string{"bearer abc"}, "Invalid Authorization header format", `Bearer error="invalid_request"`, 1},
		{"extra space", []string{"Bearer  abc"}, "Invalid Authorization header format", `Bearer error="invalid_request"`, 1},
		{"three parts", []string{"Bearer abc def"}, "Invalid Authorization header format", `Bearer error="invalid_request"`, 1},
		{"two header lines", []string{"Bearer abc", "Bearer def"}, "Invalid Authorization header format", `Bearer error="invalid_request"`, 1},
		{"unknown token", []string{"Bearer abcdefghijklmnopqrstuvwxyzABCDEF"}, "Invalid or expired token", `Bearer error="invalid_token"`, 1},
		// HTTP servers trim trailing spaces of a header value, so the
		// server reads "Bearer" without the space.
		{"empty token", []string{"Bearer "}, "Invalid Authorization header format", `Bearer error="invalid_request"`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, ts := startServer(t, Config{})
			req := newRequest(t, ts, http.MethodGet, "/api/tasks", "", "")
			if tt.authorization != nil {
				req.Header["Authorization"] = tt.authorization
			}
			resp := do(t, ts, req)

			if resp.status != http.StatusUnauthorized {
				t.Fatalf("status got %d; want 401", resp.status)
			}
			var msg messageResponse
			decodeJSON(t, resp.body, &msg)
			if msg.Message != tt.wantMessage {
				t.Errorf("message got %q; want %q", msg.Message, tt.wantMessage)
			}
			if got := resp.header.Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate got %q; want %q", got, tt.wantChallenge)
			}
			if got := server.APIRequests(); got != tt.wantAPICounted {
				t.Errorf("APIRequests got %d; want %d", got, tt.wantAPICounted)
			}
		})
	}
}

func TestListTasksSeeded(t *testing.T) {
	_, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	if resp.status != http.StatusOK {
		t.Fatalf("status got %d; want 200", resp.status)
	}
	if got := resp.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type got %q; want application/json", got)
	}
	var tasks []Task
	decodeJSON(t, resp.body, &tasks)
	if len(tasks) == 0 {
		t.Fatalf("number of tasks got 0; want seeded tasks")
	}
	for _, task := range tasks {
		if !isUUID(task.ID) {
			t.Errorf("task id got %q; want a UUID", task.ID)
		}
		if task.ProjectID != SeedProjectID {
			t.Errorf("project_id got %q; want %q", task.ProjectID, SeedProjectID)
		}
		if !slices.Contains(TaskStatuses, task.Status) {
			t.Errorf("status got %q; want one of %v", task.Status, TaskStatuses)
		}
		if task.Title == "" || task.Description == "" {
			t.Errorf("title %q, description %q; want both non-empty", task.Title, task.Description)
		}
		if task.CreatedAt.IsZero() || task.UpdatedAt.IsZero() {
			t.Errorf("created_at %v, updated_at %v; want both set", task.CreatedAt, task.UpdatedAt)
		}
	}
}

func TestListTasksWithoutSeed(t *testing.T) {
	_, ts := startServer(t, Config{DisableSeed: true})
	token := fetchToken(t, ts).AccessToken
	resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	if resp.status != http.StatusOK {
		t.Fatalf("status got %d; want 200", resp.status)
	}
	if got := strings.TrimSpace(string(resp.body)); got != "[]" {
		t.Errorf("body got %s; want []", got)
	}
}

func TestTaskTimestampsAreRFC3339(t *testing.T) {
	_, ts := startServer(t, Config{Now: newFakeClock().Now})
	token := fetchToken(t, ts).AccessToken
	resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	var tasks []map[string]any
	decodeJSON(t, resp.body, &tasks)
	for _, field := range []string{"created_at", "updated_at"} {
		value, _ := tasks[0][field].(string)
		if _, err := time.Parse(time.RFC3339, value); err != nil {
			t.Errorf("%s got %q; want RFC 3339 (%v)", field, value, err)
		}
	}
}

func TestListTasksProjectFilter(t *testing.T) {
	_, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken

	resp := apiRequest(t, ts, http.MethodPost, "/api/projects", token, `{"name":"Other","description":"Second project"}`)
	if resp.status != http.StatusCreated {
		t.Fatalf("create project status got %d (%s); want 201", resp.status, resp.body)
	}
	var project Project
	decodeJSON(t, resp.body, &project)
	body := fmt.Sprintf(`{"title":"Only here","description":"In the other project","project_id":%q}`, project.ID)
	if resp := apiRequest(t, ts, http.MethodPost, "/api/tasks", token, body); resp.status != http.StatusCreated {
		t.Fatalf("create task status got %d (%s); want 201", resp.status, resp.body)
	}

	tests := []struct {
		name       string
		query      string
		wantStatus int
		wantCount  int
	}{
		{"seed project", "?project_id=" + SeedProjectID, http.StatusOK, 3},
		{"new project", "?project_id=" + project.ID, http.StatusOK, 1},
		{"no filter", "", http.StatusOK, 4},
		{"unknown project", "?project_id=00000000-0000-4000-8000-000000000000", http.StatusOK, 0},
		{"not a uuid", "?project_id=abc", http.StatusBadRequest, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := apiRequest(t, ts, http.MethodGet, "/api/tasks"+tt.query, token, "")
			if resp.status != tt.wantStatus {
				t.Fatalf("status got %d; want %d", resp.status, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			var tasks []Task
			decodeJSON(t, resp.body, &tasks)
			if len(tasks) != tt.wantCount {
				t.Errorf("number of tasks got %d; want %d", len(tasks), tt.wantCount)
			}
		})
	}
}

func TestCreateTask(t *testing.T) {
	clock := newFakeClock()
	_, ts := startServer(t, Config{Now: clock.Now})
	token := fetchToken(t, ts).AccessToken
	body := fmt.Sprintf(`{"title":"Write tests","description":"Cover the API","project_id":%q}`, SeedProjectID)
	resp := apiRequest(t, ts, http.MethodPost, "/api/tasks", token, body)
	if resp.status != http.StatusCreated {
		t.Fatalf("status got %d (%s); want 201", resp.status, resp.body)
	}
	var task Task
	decodeJSON(t, resp.body, &task)
	if task.Status != "todo" {
		t.Errorf("status got %q; want todo", task.Status)
	}
	if task.Title != "Write tests" {
		t.Errorf("title got %q; want %q", task.Title, "Write tests")
	}
	if task.CreatedBy != testClientID {
		t.Errorf("created_by got %q; want %q", task.CreatedBy, testClientID)
	}
	if !task.CreatedAt.Equal(clock.Now()) {
		t.Errorf("created_at got %v; want %v", task.CreatedAt, clock.Now())
	}

	got := apiRequest(t, ts, http.MethodGet, "/api/tasks/"+task.ID, token, "")
	if got.status != http.StatusOK {
		t.Fatalf("get status got %d; want 200", got.status)
	}
	var fetched Task
	decodeJSON(t, got.body, &fetched)
	if fetched != task {
		t.Errorf("fetched task got %+v; want %+v", fetched, task)
	}
}

func TestCreateTaskValidation(t *testing.T) {
	long := func(n int) string { return strings.Repeat("é", n) }
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantError  string // substring of one listed error
	}{
		{"all fields", fmt.Sprintf(`{"title":"t","description":"d","project_id":%q,"status":"backlog"}`, SeedProjectID), http.StatusCreated, ""},
		{"max lengths", fmt.Sprintf(`{"title":%q,"description":%q,"project_id":%q}`, long(255), long(500), SeedProjectID), http.StatusCreated, ""},
		{"unknown fields ignored", fmt.Sprintf(`{"title":"t","description":"d","project_id":%q,"priority":1}`, SeedProjectID), http.StatusCreated, ""},
		{"title missing", fmt.Sprintf(`{"description":"d","project_id":%q}`, SeedProjectID), http.StatusBadRequest, "title is required"},
		{"description missing", fmt.Sprintf(`{"title":"t","project_id":%q}`, SeedProjectID), http.StatusBadRequest, "description is required"},
		{"project missing", `{"title":"t","description":"d"}`, http.StatusBadRequest, "project_id is required"},
		{"title empty", fmt.Sprintf(`{"title":"","description":"d","project_id":%q}`, SeedProjectID), http.StatusBadRequest, "title must be 1 to 255 characters"},
		{"title too long", fmt.Sprintf(`{"title":%q,"description":"d","project_id":%q}`, long(256), SeedProjectID), http.StatusBadRequest, "title must be 1 to 255 characters"},
		{"description too long", fmt.Sprintf(`{"title":"t","description":%q,"project_id":%q}`, long(501), SeedProjectID), http.StatusBadRequest, "description must be 1 to 500 characters"},
		{"status invalid", fmt.Sprintf(`{"title":"t","description":"d","project_id":%q,"status":"doing"}`, SeedProjectID), http.StatusBadRequest, `status "doing" is invalid`},
		{"title not a string", fmt.Sprintf(`{"title":5,"description":"d","project_id":%q}`, SeedProjectID), http.StatusBadRequest, "title must be a string"},
		{"project not a uuid", `{"title":"t","description":"d","project_id":"p1"}`, http.StatusBadRequest, "is not a UUID"},
		{"body not an object", `[]`, http.StatusBadRequest, ""},
		{"body malformed", `{"title":`, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := startServer(t, Config{})
			token := fetchToken(t, ts).AccessToken
			resp := apiRequest(t, ts, http.MethodPost, "/api/tasks", token, tt.body)
			if resp.status != tt.wantStatus {
				t.Fatalf("status got %d (%s); want %d", resp.status, resp.body, tt.wantStatus)
			}
			if tt.wantError == "" {
				return
			}
			var validation validationResponse
			decodeJSON(t, resp.body, &validation)
			if !slices.ContainsFunc(validation.Errors, func(e string) bool { return strings.Contains(e, tt.wantError) }) {
				t.Errorf("errors got %q; want one containing %q", validation.Errors, tt.wantError)
			}
		})
	}
}

func TestCreateTaskUnknownProject(t *testing.T) {
	_, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	body := `{"title":"t","description":"d","project_id":"00000000-0000-4000-8000-000000000000"}`
	resp := apiRequest(t, ts, http.MethodPost, "/api/tasks", token, body)
	if resp.status != http.StatusBadRequest {
		t.Errorf("status got %d; want 400", resp.status)
	}
}

func TestUpdateTask(t *testing.T) {
	clock := newFakeClock()
	_, ts := startServer(t, Config{Now: clock.Now})
	token := fetchToken(t, ts).AccessToken
	create := fmt.Sprintf(`{"title":"Original","description":"Before update","project_id":%q}`, SeedProjectID)
	resp := apiRequest(t, ts, http.MethodPost, "/api/tasks", token, create)
	var task Task
	decodeJSON(t, resp.body, &task)

	clock.Advance(time.Minute)
	resp = apiRequest(t, ts, http.MethodPut, "/api/tasks/"+task.ID, token, `{"status":"done"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("status got %d (%s); want 200", resp.status, resp.body)
	}
	var updated Task
	decodeJSON(t, resp.body, &updated)
	if updated.Status != "done" {
		t.Errorf("status got %q; want done", updated.Status)
	}
	if updated.Title != "Original" {
		t.Errorf("title got %q; want Original, unchanged", updated.Title)
	}
	if !updated.UpdatedAt.Equal(task.CreatedAt.Add(time.Minute)) {
		t.Errorf("updated_at got %v; want %v", updated.UpdatedAt, task.CreatedAt.Add(time.Minute))
	}
	if !updated.CreatedAt.Equal(task.CreatedAt) {
		t.Errorf("created_at got %v; want %v, unchanged", updated.CreatedAt, task.CreatedAt)
	}

	tests := []struct {
		name       string
		id         string
		body       string
		wantStatus int
	}{
		{"title and description", task.ID, `{"title":"New","description":"After"}`, http.StatusOK},
		{"no fields", task.ID, `{}`, http.StatusBadRequest},
		{"only unknown fields", task.ID, `{"priority":"high"}`, http.StatusBadRequest},
		{"invalid status", task.ID, `{"status":"paused"}`, http.StatusBadRequest},
		{"empty title", task.ID, `{"title":""}`, http.StatusBadRequest},
		{"unknown project", task.ID, `{"project_id":"00000000-0000-4000-8000-000000000000"}`, http.StatusBadRequest},
		{"unknown task", "00000000-0000-4000-8000-000000000000", `{"status":"done"}`, http.StatusNotFound},
		{"id not a uuid", "abc", `{"status":"done"}`, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := apiRequest(t, ts, http.MethodPut, "/api/tasks/"+tt.id, token, tt.body)
			if resp.status != tt.wantStatus {
				t.Errorf("status got %d (%s); want %d", resp.status, resp.body, tt.wantStatus)
			}
		})
	}
}

func TestUpdateTaskNoFieldsMessage(t *testing.T) {
	_, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	var tasks []Task
	decodeJSON(t, apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "").body, &tasks)
	resp := apiRequest(t, ts, http.MethodPut, "/api/tasks/"+tasks[0].ID, token, `{}`)
	var msg messageResponse
	decodeJSON(t, resp.body, &msg)
	if msg.Message != "No fields provided for update" {
		t.Errorf("message got %q; want %q", msg.Message, "No fields provided for update")
	}
}

func TestDeleteTask(t *testing.T) {
	_, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	var tasks []Task
	decodeJSON(t, apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "").body, &tasks)
	id := tasks[0].ID

	resp := apiRequest(t, ts, http.MethodDelete, "/api/tasks/"+id, token, "")
	if resp.status != http.StatusNoContent {
		t.Errorf("delete status got %d; want 204", resp.status)
	}
	if len(resp.body) != 0 {
		t.Errorf("delete body got %q; want empty", resp.body)
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks/"+id, token, ""); resp.status != http.StatusNotFound {
		t.Errorf("get after delete status got %d; want 404", resp.status)
	}
	if resp := apiRequest(t, ts, http.MethodDelete, "/api/tasks/"+id, token, ""); resp.status != http.StatusNotFound {
		t.Errorf("second delete status got %d; want 404", resp.status)
	}
	var after []Task
	decodeJSON(t, apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "").body, &after)
	if len(after) != len(tasks)-1 {
		t.Errorf("number of tasks after delete got %d; want %d", len(after), len(tasks)-1)
	}
}

func TestProjectsCRUD(t *testing.T) {
	_, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken

	resp := apiRequest(t, ts, http.MethodGet, "/api/projects", token, "")
	var projects []Project
	decodeJSON(t, resp.body, &projects)
	if len(projects) != 1 || projects[0].ID != SeedProjectID {
		t.Fatalf("projects got %+v; want the seed project only", projects)
	}

	resp = apiRequest(t, ts, http.MethodPost, "/api/projects", token, `{"name":"Launch","description":"Release work"}`)
	if resp.status != http.StatusCreated {
		t.Fatalf("create status got %d (%s); want 201", resp.status, resp.body)
	}
	var project Project
	decodeJSON(t, resp.body, &project)
	if !isUUID(project.ID) {
		t.Errorf("id got %q; want a UUID", project.ID)
	}
	if project.Name != "Launch" {
		t.Errorf("name got %q; want Launch", project.Name)
	}

	resp = apiRequest(t, ts, http.MethodPut, "/api/projects/"+project.ID, token, `{"name":"Launch v2"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("update status got %d (%s); want 200", resp.status, resp.body)
	}
	var updated Project
	decodeJSON(t, resp.body, &updated)
	if updated.Name != "Launch v2" {
		t.Errorf("name got %q; want %q", updated.Name, "Launch v2")
	}
	if updated.Description != "Release work" {
		t.Errorf("description got %q; want %q, unchanged", updated.Description, "Release work")
	}

	resp = apiRequest(t, ts, http.MethodGet, "/api/projects/"+project.ID, token, "")
	if resp.status != http.StatusOK {
		t.Errorf("get status got %d; want 200", resp.status)
	}

	// Deleting a project deletes its tasks.
	if resp := apiRequest(t, ts, http.MethodDelete, "/api/projects/"+SeedProjectID, token, ""); resp.status != http.StatusNoContent {
		t.Errorf("delete status got %d; want 204", resp.status)
	}
	var tasks []Task
	decodeJSON(t, apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "").body, &tasks)
	if len(tasks) != 0 {
		t.Errorf("number of tasks after deleting their project got %d; want 0", len(tasks))
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/projects/"+SeedProjectID, token, ""); resp.status != http.StatusNotFound {
		t.Errorf("get deleted project status got %d; want 404", resp.status)
	}
}

func TestProjectValidation(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
	}{
		{"create name missing", http.MethodPost, "/api/projects", `{"description":"d"}`, http.StatusBadRequest},
		{"create description missing", http.MethodPost, "/api/projects", `{"name":"n"}`, http.StatusBadRequest},
		{"create name too long", http.MethodPost, "/api/projects", fmt.Sprintf(`{"name":%q,"description":"d"}`, strings.Repeat("n", 256)), http.StatusBadRequest},
		{"create description too long", http.MethodPost, "/api/projects", fmt.Sprintf(`{"name":"n","description":%q}`, strings.Repeat("d", 501)), http.StatusBadRequest},
		{"update no fields", http.MethodPut, "/api/projects/" + SeedProjectID, `{}`, http.StatusBadRequest},
		{"update empty name", http.MethodPut, "/api/projects/" + SeedProjectID, `{"name":""}`, http.StatusBadRequest},
		{"update unknown", http.MethodPut, "/api/projects/00000000-0000-4000-8000-000000000000", `{"name":"n"}`, http.StatusNotFound},
		{"get not a uuid", http.MethodGet, "/api/projects/seed", "", http.StatusBadRequest},
		{"delete unknown", http.MethodDelete, "/api/projects/00000000-0000-4000-8000-000000000000", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := startServer(t, Config{})
			token := fetchToken(t, ts).AccessToken
			resp := apiRequest(t, ts, tt.method, tt.path, token, tt.body)
			if resp.status != tt.wantStatus {
				t.Errorf("status got %d (%s); want %d", resp.status, resp.body, tt.wantStatus)
			}
		})
	}
}

func TestUnknownAPIPath(t *testing.T) {
	server, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken

	if resp := apiRequest(t, ts, http.MethodGet, "/api/unknown", "", ""); resp.status != http.StatusUnauthorized {
		t.Errorf("status without token got %d; want 401", resp.status)
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/unknown", token, ""); resp.status != http.StatusNotFound {
		t.Errorf("status with token got %d; want 404", resp.status)
	}
	if got := server.APIRequests(); got != 2 {
		t.Errorf("APIRequests got %d; want 2", got)
	}
}
