package controlapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/interviewvm/controlplane/pkg/controlapi/apigen"
	"github.com/interviewvm/controlplane/pkg/session"
)

// WebhookService manages a tenant's webhook endpoints and deliveries. It
// validates what the handlers pass through (the URL's scheme and
// addresses, the event types) and answers session errors.
type WebhookService interface {
	// CreateWebhookEndpoint registers e (URL, Events, Description) and
	// returns it with its signing secret.
	CreateWebhookEndpoint(ctx context.Context, scope session.Scope, e session.WebhookEndpoint) (session.WebhookEndpoint, string, error)
	ListWebhookEndpoints(ctx context.Context, scope session.Scope, p session.Page) ([]session.WebhookEndpoint, string, error)
	DeleteWebhookEndpoint(ctx context.Context, scope session.Scope, id string) error
	WebhookDeliveries(ctx context.Context, scope session.Scope, endpointID string, p session.Page) ([]session.WebhookDelivery, string, error)
	// RetryWebhookDelivery sends a delivery again.
	RetryWebhookDelivery(ctx context.Context, scope session.Scope, endpointID, deliveryID string) error
}

func (s *Server) webhooks() (WebhookService, error) {
	if s.cfg.Webhooks == nil {
		return nil, session.Errorf(session.EUNAVAILABLE, "webhooks are not configured on this controller")
	}
	return s.cfg.Webhooks, nil
}

type webhookEndpointInput struct {
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description"`
}

// webhookEndpointCreated is the answer of a create: the only one carrying
// the secret.
type webhookEndpointCreated struct {
	session.WebhookEndpoint
	Secret string `json:"secret"`
}

// CreateWebhookEndpoint handles "POST /v1/webhooks" (admin only).
func (s *Server) CreateWebhookEndpoint(c echo.Context, _ apigen.CreateWebhookEndpointParams) error {
	svc, err := s.webhooks()
	if err != nil {
		return err
	}
	var in webhookEndpointInput
	if err := decode(c, &in); err != nil {
		return err
	}
	if err := checkText("description", in.Description, 0, 500); err != nil {
		return err
	}
	out, secret, err := svc.CreateWebhookEndpoint(c.Request().Context(), principal(c).Scope(),
		session.WebhookEndpoint{URL: in.URL, Events: in.Events, Description: in.Description})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, webhookEndpointCreated{WebhookEndpoint: out, Secret: secret})
}

// ListWebhookEndpoints handles "GET /v1/webhooks" (admin only).
func (s *Server) ListWebhookEndpoints(c echo.Context, _ apigen.ListWebhookEndpointsParams) error {
	svc, err := s.webhooks()
	if err != nil {
		return err
	}
	p, err := page(c)
	if err != nil {
		return err
	}
	items, next, err := svc.ListWebhookEndpoints(c.Request().Context(), principal(c).Scope(), p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next))
}

// DeleteWebhookEndpoint handles "DELETE /v1/webhooks/{id}" (admin only).
func (s *Server) DeleteWebhookEndpoint(c echo.Context, _ apigen.ID) error {
	svc, err := s.webhooks()
	if err != nil {
		return err
	}
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := svc.DeleteWebhookEndpoint(c.Request().Context(), principal(c).Scope(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// ListWebhookDeliveries handles "GET /v1/webhooks/{id}/deliveries" (admin
// only).
func (s *Server) ListWebhookDeliveries(c echo.Context, _ apigen.ID, _ apigen.ListWebhookDeliveriesParams) error {
	svc, err := s.webhooks()
	if err != nil {
		return err
	}
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	p, err := page(c)
	if err != nil {
		return err
	}
	items, next, err := svc.WebhookDeliveries(c.Request().Context(), principal(c).Scope(), id, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next))
}

// RetryWebhookDelivery handles "POST
// /v1/webhooks/{id}/deliveries/{delivery_id}/retry" (admin only).
func (s *Server) RetryWebhookDelivery(c echo.Context, _ apigen.ID, _ apigen.DeliveryID) error {
	svc, err := s.webhooks()
	if err != nil {
		return err
	}
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	did, err := pathID(c, "delivery_id")
	if err != nil {
		return err
	}
	if err := svc.RetryWebhookDelivery(c.Request().Context(), principal(c).Scope(), id, did); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}
